"""Neural fields: the tri-plane hash-grid position encoder (C++ CPU kernel + PyTorch reference)."""

from talksplat.fields.hashgrid import (
    GridLayout,
    HashGridConfig,
    TriPlaneHashEncoding,
    backend_status,
    grid_layout,
    init_embeddings,
    triplane_hash_encode,
)

__all__ = [
    "GridLayout",
    "HashGridConfig",
    "TriPlaneHashEncoding",
    "backend_status",
    "grid_layout",
    "init_embeddings",
    "triplane_hash_encode",
]
