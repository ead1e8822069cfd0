"""Models: attention, fusion, event localizers, cross-modal networks, and the registry."""
