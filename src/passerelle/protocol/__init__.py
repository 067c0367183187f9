"""The wire formats clients speak to the gateway ("dialects"), translated at the edges.

Inside, every call is an OpenAI chat-completions request; a dialect turns the client's body into
one and the answer (a completion, each stream event, an error) back into its own format.
"""
