"""Dataset and model card templates (shipped as ``gptextures.cards``)."""
