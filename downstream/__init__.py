"""synthvox.downstream: features, registration, metrics, few-shot segmentation, reports.

Modules (imported explicitly; nothing heavy at package import):
`features` (normalise_image, extract_features), `mind` (mind_ssc), `metrics`, `grid`
(the grid_sample helper and world-correct resampling), `io` (NIfTI, displacement fields),
`network` (checkpoint specs), `registration` (register_volumes, register_files, register_batch),
`results` (the results records).
"""
__all__: list[str] = []
