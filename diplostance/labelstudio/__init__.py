"""The round trip with Label Studio: the labelling config from the schema (config), tasks for a selection of
sentences with the model's pre-annotations (export), a JSON export back to annotation records (importer),
the `labelstudio` commands (commands), and a push/pull client that runs in the Label Studio environment (client)."""
