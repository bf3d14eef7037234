"""DenseFusion's caption engine: the pivot MLLM fine-tuned on the teacher seed set (`teacher_sft.json`)."""
