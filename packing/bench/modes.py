"""Names of the benchmark modes: CLI key -> label printed in the spec's format.

Order: Original, the packed modes, then the rivals of packing (:data:`RIVALS`).
"""

MODES: dict[str, str] = {
    "original": "Original",
    "offline_unpack_repack": "Pack Offline Unpack Repack",
    "online_unpack_repack": "Pack Online Unpack Repack",
    "offline_attention_mask": "Pack Offline AttentionMask",
    "online_first_fit": "Pack Online AttentionMask(first_fit)",
    "online_next_fit": "Pack Online AttentionMask(next_fit)",
    "online_best_fit": "Pack Online AttentionMask(best_fit)",
    "dynamic_padding": "Dynamic Padding",
    "sorted_dynamic_padding": "Sorted Dynamic Padding",
    "best_sorted_dynamic_padding": "Sorted Dynamic Padding (best batch size)",
    "no_batching": "No Batching",
    "online_sorted_dynamic_padding": "Online Sorted Dynamic Padding",
    "hf_pipeline": "HF Pipeline",
}

#: Packed modes that take requests one at a time as they arrive.
PACKED_ONLINE: tuple[str, ...] = ("online_unpack_repack", "online_first_fit", "online_next_fit",
                                  "online_best_fit")

#: Ways to serve without packing, each at its setting (best SDP: its best batch size).
RIVALS: tuple[str, ...] = ("dynamic_padding", "sorted_dynamic_padding",
                           "best_sorted_dynamic_padding", "no_batching",
                           "online_sorted_dynamic_padding", "hf_pipeline")
