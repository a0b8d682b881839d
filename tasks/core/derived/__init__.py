"""The derived sets (docs/derived.md): SFT dialogues in the ultrachat_200k shape and DPO pairs in
the ultrafeedback_binarized shape, their recipes, splits, schemas and cards."""
