"""File jobs: plan.py decides what a `predict` run reads and writes, pipeline.py streams it through the
Predictor's stages in threads, sinks.py writes one file or resumable parts, collisions.py keeps outputs off inputs."""
