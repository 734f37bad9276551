"""Taskswap's HTTP service: BentoML + a mounted FastAPI app over the ``adapters`` core."""
