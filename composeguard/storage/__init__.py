"""Storage backends: find the dataset/subvolume behind a host path, snapshot it, restore it."""
