"""The AVE data layer: catalog, labels, splits, dataset directories, feature store, AVE-Synth."""
