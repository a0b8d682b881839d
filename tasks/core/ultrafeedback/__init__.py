"""UltraFeedback reproduction, pure core: recipe, intake, plan, judge prompts, parsers, export.

No I/O beyond reading the package's own templates, no clock, no Prefect. Modules:
recipe (UltraFeedbackRecipe), principles (mixes, system-prompt pools), intake (PromptRecord,
Quarantined), plan (PlanItem, rendezvous model sampling), judge (AnnotationJob, CritiqueJob),
parse (strict rating and critique parsers), export (records and schema of docs/datasets.md#schema).
"""
