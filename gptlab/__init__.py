"""gptlab: a character-level GPT built from swappable components, and an ablation harness."""

__version__ = "0.2.0"
