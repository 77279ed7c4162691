"""Everything that talks to Docker and Compose: project resolution and the running state."""
