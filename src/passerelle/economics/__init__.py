"""Economics: revenue, margins, and (later) savings, what-if replay and the self-host planner."""
