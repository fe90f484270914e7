"""Classic architectures that segmentation_models_pytorch does not have, written here."""
