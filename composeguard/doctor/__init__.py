"""``composeguard doctor``: read-only checks of a project's layout (storage, networks, GPUs,
CPU pinning, composeguard's own state), each finding with a severity and the fix."""
