"""The AWS side of the product: entry points that run the same steps on AWS services.

`glue_job` is the AWS Glue (Spark) job entry point: ``python -m purchases.aws.glue_job``.
"""
