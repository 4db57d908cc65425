"""The built-in demo model: synthetic scenes, their checker, training and the held-out evaluation."""

# Prompts the demo model draws: the web page's example chips, the model card and the README show them, and
# tests/bot/adapters/test_web_demo.py checks the shipped model draws each. Light on purpose: the bot imports it.
EXAMPLES = (
    "a large red circle at the top on a blue background",
    "two small yellow squares on a purple background",
    "a green triangle in the bottom left on a white background",
    "a black background with a big orange square in the center",
    "a red square in the top left and a yellow circle in the bottom right on a blue background",
)
