"""The `cassava` command line: thin typer glue over the pipeline, the client and the model store."""
