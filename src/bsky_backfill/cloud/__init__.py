"""Cloud storage access (S3, DynamoDB) shared by the S3 source and the cloud sinks."""

__all__: list[str] = []
