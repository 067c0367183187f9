// The openai Node SDK against a real gateway: one scenario per run, named by the first argument.
// GATEWAY_URL (…/v1), KEY and THRIFTY_KEY come from the environment; prints "ok" or throws.
import assert from "node:assert/strict";
import OpenAI from "openai";

const REPLY = "Hello from fake upstream.";
const MODEL = "gpt-4o-mini";
const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.KEY, maxRetries: 0 });
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string", minLength: 5 } },
      required: ["city"],
    },
  },
};

const scenarios = {
  async plain() {
    const answer = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "hi #usage:12,5,0" }],
    });
    assert.equal(answer.choices[0].message.content, REPLY);
    assert.equal(answer.usage.prompt_tokens, 12);
  },
  async streamed() {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "hi #usage:3,4,0" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    assert.equal(text, REPLY);
    assert.equal(usage.completion_tokens, 4);
  },
  async tools() {
    const messages = [{ role: "user", content: "Weather in Paris? #tool_call:get_weather" }];
    const first = await client.chat.completions.create({ model: MODEL, messages, tools: [weather] });
    const [call] = first.choices[0].message.tool_calls;
    assert.equal(first.choices[0].finish_reason, "tool_calls");
    assert.equal(call.function.name, "get_weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "xxxxx" });
    // the same call streamed: the arguments arrive in pieces
    const stream = await client.chat.completions.create({ model: MODEL, messages, tools: [weather], stream: true });
    let args = "";
    for await (const chunk of stream) {
      for (const c of chunk.choices[0]?.delta?.tool_calls ?? []) args += c.function?.arguments ?? "";
    }
    assert.equal(args, call.function.arguments);
    messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" });
    const second = await client.chat.completions.create({ model: MODEL, messages, tools: [weather] });
    assert.equal(second.choices[0].message.content, "The tool answered: sunny");
  },
  async embeddings() {
    const result = await client.embeddings.create({ model: "fake-embed", input: ["a", "b"] });
    assert.equal(result.data.length, 2);
    assert.equal(result.data[0].embedding.length, 8);
  },
  async completions() {
    const answer = await client.completions.create({ model: MODEL, prompt: "Say", max_tokens: 2 });
    assert.equal(answer.choices[0].text, "Hello from");
    const model = await client.models.retrieve(MODEL);
    assert.equal(model.id, MODEL);
  },
  async rate_limited() {
    const thrifty = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.THRIFTY_KEY, maxRetries: 0 });
    await assert.rejects(
      thrifty.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] }),
      (err) => err instanceof OpenAI.RateLimitError && err.status === 429,
    );
  },
  async bad_request() {
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: "wizard", content: "hi" }] }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === "messages[0].role",
    );
  },
};

await scenarios[process.argv[2]]();
console.log("ok");
