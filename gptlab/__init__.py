"""gptlab: a character-level GPT built from swappable components, and an ablation harness."""

__version__ = "0.1.0"
