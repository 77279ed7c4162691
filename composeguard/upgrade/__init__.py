"""The guarded upgrade and the nightly update: plan it, check it, run it as a journaled
transaction (optionally after a trial on clones), probe it, and every way back."""
