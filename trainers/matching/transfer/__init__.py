"""Memory-efficient transfer of frozen backbones to image-text matching: UniPT and SHERL, with
full fine-tuning and a linear probe as the baselines they are measured against."""
