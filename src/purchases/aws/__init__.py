"""The AWS side of the product: entry points that run the same steps on AWS services.

* `glue_job`: the AWS Glue (Spark) job entry point, ``python -m purchases.aws.glue_job``.
* `lambdas`: the Lambda handlers `trigger`, `upsert` and `record_failure`.
* `glue_catalog`: registers published partitions in the Glue Data Catalog (for Athena).
* `asl`: the Step Functions definition rendered from `pipeline.PIPELINE`.
* `clients`: AWS API clients configured the standard AWS way.
"""
