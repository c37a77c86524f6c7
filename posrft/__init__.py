"""posrft: RL fine-tuning of multimodal LLMs that generate and understand human pose.

Two methods live here: Pose-RFT / HyGRPO (text + continuous SMPL pose from a ``<POSE>`` token)
and SkeletonLLM (DrAction, a differentiable skeleton renderer in front of an MLLM).
See ``README.md`` for the quickstart and ``DESIGN`` notes for the layering.
"""

__version__ = "0.1.0"
