"""The pipeline's stages: one thin script per DVC stage of dvc.yaml, each reading params.yaml and calling rnas."""
