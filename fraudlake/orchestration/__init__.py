"""Above the layers: starting, draining and summing up the pipeline (:mod:`.pipeline`,
:mod:`.streaming`, :mod:`.run`), the demo, and rescoring silver with another model
(:mod:`.rescore`). Imports the core and the layers; the CLI calls it."""
