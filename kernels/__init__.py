"""GPU kernels (Triton) with plain-torch fallbacks that define their semantics and are tested against them."""
