"""Names of the benchmark modes: CLI key -> label printed in the spec's format."""

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
    "hf_pipeline": "HF Pipeline",
}
