"""Models: the catalog (models/catalog.yaml), InferenceService rendering and cluster deploys."""
