"""Floor 7: SkeletonLLM recipes (renderer in front of the MLLM, Disc-FT, CR-Distill, teachers)."""
