"""The one training core every `fusionweave train METHOD` runs on (Hugging Face Accelerate)."""
