"""Development and test helpers, out of the product's way: the scripted mock LLM and its command."""
