"""Video stage: frame-exact extraction per TR window and frozen vision-model feature caching."""
