"""deploy/template.yaml against the code it deploys: the state machine's substitutions, the Glue
jobs' steps, the Lambda handlers, the Athena tables, the IAM statements, the lake bucket.

The validators themselves (cfn-lint, checkov, parliament, asl-validator, statelint, actionlint)
run in `make validate-deploy`; these tests read the template as data and compare it with the
product's own declarations, so that a change on either side fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from purchases import secrets
from purchases.aws import asl, glue_catalog, glue_job, lambdas, package
from purchases.config import Settings
from purchases.contract import BRONZE_FILE_SUFFIXES
from purchases.pipeline import PIPELINE, RESOURCES, RUN_PARAMETERS, SWEEP

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"

# Actions that read or change data: a statement granting one names its resources.
DATA_PREFIXES = ("s3:", "glue:", "secretsmanager:", "states:", "sns:", "sqs:", "kms:",
                 "lambda:", "logs:CreateLogStream", "logs:PutLogEvents")
# What AWS authorises only on "*" (no resource-level permission), with the template's comment.
STAR_ONLY = {
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcEndpoints", "ec2:DescribeRouteTables", "ec2:DescribeVpcAttribute",
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags: `!Ref X` -> {"Ref": "X"}, `!Sub s` ->
    {"Fn::Sub": s}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]}, ..."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with TEMPLATE.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def props(template: dict[str, Any], logical: str) -> dict[str, Any]:
    return template["Resources"][logical]["Properties"]


def target(value: Any) -> str:
    """The logical id a `!Ref X` / `!GetAtt X.Arn` points to."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0]


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every role's policies (the `!If` branch that holds one, too)."""
    for logical, role in of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for st in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in st:
                    st = st["Fn::If"][1]
                yield logical, st


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def rendered_definition() -> str:
    return asl.render(asl.to_asl())


# --- the state machine ----------------------------------------------------------------------


def test_definition_substitutions_are_exactly_the_definitions_placeholders(template) -> None:
    placeholders = set(re.findall(r"\$\{([^}]+)\}", rendered_definition()))
    sm = props(template, "StateMachine")
    assert set(sm["DefinitionSubstitutions"]) == placeholders
    assert placeholders == set(asl.substitutions())
    assert sm["DefinitionS3Location"] == {
        "Bucket": {"Ref": "ArtifactsBucket"},
        "Key": {"Fn::Sub": "${ArtifactsPrefix}/" + package.DEFINITION},
    }
    assert "Definition" not in sm and "DefinitionString" not in sm


def test_each_substitution_names_the_resource_that_runs_its_step(template) -> None:
    jobs = {props(template, k)["DefaultArguments"]["--step"]: k
            for k in of_type(template, "AWS::Glue::Job")}
    functions = {props(template, k)["Handler"].rsplit(".", 1)[-1]: k
                 for k in of_type(template, "AWS::Lambda::Function")}
    subs = props(template, "StateMachine")["DefinitionSubstitutions"]
    for key, step in asl.substitutions().items():
        if key.endswith("JobName"):
            assert subs[key] == {"Ref": jobs[step]}, key
        else:
            assert subs[key] == {"Fn::GetAtt": [functions[asl.function_name(step)], "Arn"]}, key
    assert functions[SWEEP.function] == "PendingFunction"


def test_the_state_machine_may_invoke_every_function_it_names(template) -> None:
    named = {target(v) for k, v in props(template, "StateMachine")[
        "DefinitionSubstitutions"].items() if k.endswith("FunctionArn")}
    (invoke,) = [st for role, st in statements(template)
                 if role == "StateMachineRole" and st["Action"] == "lambda:InvokeFunction"]
    assert {target(r) for r in invoke["Resource"] if "Fn::GetAtt" in r} == named
    assert named == {"UpsertFunction", "RecordFailureFunction", "PendingFunction"}


def test_the_state_machine_logs_to_a_log_group_with_retention(template) -> None:
    logging = props(template, "StateMachine")["LoggingConfiguration"]
    group = target(logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"])
    assert props(template, group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert logging["Level"] in ("ERROR", "ALL")


# --- Glue jobs ------------------------------------------------------------------------------


def test_one_glue_job_per_glue_step(template) -> None:
    glue_steps = {t.name for t in PIPELINE if t.resource == "glue"}
    jobs = of_type(template, "AWS::Glue::Job")
    assert {j["Properties"]["DefaultArguments"]["--step"] for j in jobs.values()} == glue_steps
    assert len(jobs) == len(glue_steps)
    for logical, job in jobs.items():
        p, step = job["Properties"], job["Properties"]["DefaultArguments"]["--step"]
        assert p["Name"] == {"Fn::Sub": "${AWS::StackName}-" + step}
        # The entry point finds its step from the job name too (`<prefix>-<step>`).
        assert glue_job.resolve_step({"JOB_NAME": f"mystack-{step}"}) == step
        assert p["GlueVersion"] == "5.0"
        assert p["WorkerType"] == {"Ref": "GlueWorkerType"}
        assert p["NumberOfWorkers"] == {"Ref": "GlueNumberOfWorkers"}
        assert p["ExecutionProperty"] == {"MaxConcurrentRuns": 1}
        assert p["Command"]["Name"] == "glueetl"
        assert p["Command"]["ScriptLocation"] == {
            "Fn::Sub": "s3://${ArtifactsBucket}/${ArtifactsPrefix}/" + package.GLUE_SCRIPT}
        args = p["DefaultArguments"]
        assert args["--additional-python-modules"] == {
            "Fn::Sub": "s3://${ArtifactsBucket}/${ArtifactsPrefix}/${WheelFile}"}
        assert args["--lake"] == {"Fn::Sub": "s3://${LakeBucket}"}
        assert args["--engine"] == "spark"
        # Every other argument is one the entry point reads (or a Glue one, `--` + dashes).
        for name in args:
            assert name[2:] in glue_job.OPTIONAL_ARGS or "-" in name[2:], (logical, name)
        assert set(args["--custom-logGroup-prefix"]["Fn::Sub"].split("/")) >= {"aws-glue"}
        # Glue's own TIMEOUT must end a hung run before the Task's TimeoutSeconds does (with
        # a few of Step Functions' status polls to spare), so the run says TIMEOUT.
        assert 60 <= RESOURCES["glue"].timeout_seconds - 60 * p["Timeout"] <= 900, logical


def test_the_jobs_that_validate_rows_get_the_same_validation_settings(template) -> None:
    # silver_to_gold validates again (its bronze_to_silver) after a lost commit race: with
    # other settings the same file would be judged twice, differently.
    jobs = {props(template, k)["DefaultArguments"]["--step"]: props(template, k)
            for k in of_type(template, "AWS::Glue::Job")}
    validation = {step: {n: jobs[step]["DefaultArguments"].get(f"--{n}")
                         for n in glue_job.VALIDATION_ARGS}
                  for step in ("bronze_to_silver", "silver_to_gold")}
    assert validation["bronze_to_silver"] == validation["silver_to_gold"], validation
    assert set(glue_job.VALIDATION_ARGS) <= set(glue_job.SETTING_ARGS)


def test_the_job_that_loads_the_database_has_its_secret_and_network(template) -> None:
    jobs = {props(template, k)["DefaultArguments"]["--step"]: props(template, k)
            for k in of_type(template, "AWS::Glue::Job")}
    loader = jobs["gold_to_staging"]
    assert loader["DefaultArguments"]["--database_secret_arn"] == {"Ref": "DatabaseSecretArn"}
    connection = props(template, target(loader["Connections"]["Connections"][0]))
    physical = connection["ConnectionInput"]["PhysicalConnectionRequirements"]
    assert physical["SecurityGroupIdList"] == {"Ref": "SecurityGroupIds"}
    assert physical["SubnetId"] == {"Fn::Select": [0, {"Ref": "SubnetIds"}]}
    # The job that commits registers the batch's partitions for Athena.
    assert jobs["silver_to_gold"]["DefaultArguments"]["--glue_database"] == {
        "Ref": "GlueDatabase"}


def test_glue_jobs_log_groups_exist_with_retention(template) -> None:
    groups = {props(template, k)["LogGroupName"]["Fn::Sub"]: props(template, k)
              for k in of_type(template, "AWS::Logs::LogGroup")}
    for logical in of_type(template, "AWS::Glue::Job"):
        prefix = props(template, logical)["DefaultArguments"]["--custom-logGroup-prefix"]
        for stream in ("output", "error"):
            group = groups[f"{prefix['Fn::Sub']}/{stream}"]
            assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# --- Lambdas --------------------------------------------------------------------------------


def test_lambda_handlers_exist_and_are_the_modules_four(template) -> None:
    functions = of_type(template, "AWS::Lambda::Function")
    handlers = {f["Properties"]["Handler"] for f in functions.values()}
    assert handlers == {f"purchases.aws.lambdas.{n}" for n in ("trigger", "upsert",
                                                               "record_failure", "pending")}
    for f in functions.values():
        p = f["Properties"]
        module, _, name = p["Handler"].rpartition(".")
        assert module == lambdas.__name__ and callable(getattr(lambdas, name))
        assert p["Runtime"] == "python3.12"
        assert p["Architectures"] == ["x86_64"]
        assert p["Code"] == {"S3Bucket": {"Ref": "ArtifactsBucket"},
                             "S3Key": {"Fn::Sub": "${ArtifactsPrefix}/" + package.LAMBDA_ZIP}}
        env = p["Environment"]["Variables"]
        assert env["PURCHASES_LAKE"] == {"Fn::Sub": "s3://${LakeBucket}"}
        group = props(template, target(p["LoggingConfig"]["LogGroup"]))
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_trigger_starts_this_state_machine_and_has_a_dead_letter_queue(template) -> None:
    trigger = props(template, "TriggerFunction")
    assert trigger["Environment"]["Variables"][lambdas.STATE_MACHINE_ENV] == {
        "Ref": "StateMachine"}
    queue = target(trigger["DeadLetterConfig"]["TargetArn"])
    assert template["Resources"][queue]["Type"] == "AWS::SQS::Queue"


def test_the_database_lambdas_run_in_the_database_vpc(template) -> None:
    for logical in ("UpsertFunction", "RecordFailureFunction", "PendingFunction"):
        vpc = props(template, logical)["VpcConfig"]
        assert vpc == {"SubnetIds": {"Ref": "SubnetIds"},
                       "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    for logical in ("UpsertFunction", "PendingFunction"):  # the ledger is in the database
        env = props(template, logical)["Environment"]["Variables"]
        assert env[secrets.SETTING] == {"Ref": "DatabaseSecretArn"}
    assert "VpcConfig" not in props(template, "TriggerFunction")


def test_the_sweeps_check_only_reads(template) -> None:
    pending = props(template, "PendingFunction")
    assert pending["Handler"] == f"purchases.aws.lambdas.{SWEEP.function}"
    assert pending["Timeout"] <= RESOURCES["lambda"].timeout_seconds
    actions = {a for role, st in statements(template) if role == target(pending["Role"])
               for a in as_list(st["Action"])}
    writes = {a for a in actions if a.startswith(("s3:Put", "s3:Delete", "kms:Generate",
                                                   "kms:Encrypt", "states:", "sqs:", "sns:"))}
    assert writes == set() and {"s3:GetObject", "s3:ListBucket"} <= actions
    # Reads: bronze files and the commit log (and their folder names, which the file system
    # asks HeadObject of), nothing else of the lake.
    (read,) = [st for role, st in statements(template) if role == target(pending["Role"])
               and st["Action"] == "s3:GetObject"]
    assert [r["Fn::Sub"].removeprefix("${LakeBucket.Arn}/") for r in read["Resource"]] == [
        "bronze", "bronze/*", "_state/commits", "_state/commits/*", "_state/checkpoint.json"]


def test_bronze_events_reach_the_trigger_for_data_files_only(template) -> None:
    rule = props(template, "BronzeFileRule")
    assert target(rule["Targets"][0]["Arn"]) == "TriggerFunction"
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    wildcards = [m["wildcard"] for m in pattern["detail"]["object"]["key"]]

    def matches(key: str) -> bool:
        return any(re.fullmatch(".*".join(map(re.escape, w.split("*"))), key)
                   for w in wildcards)

    day = "bronze/year=2024/month=01/day=15"
    for suffix in BRONZE_FILE_SUFFIXES:
        assert matches(f"{day}/purchases{suffix}")
        assert matches(f"{day}/PURCHASES{suffix.upper()}")
    for key in (f"{day}/notes.txt", f"{day}/purchases.csv.zip", "silver/x.csv",
                "_state/runs/x.csv.json", "bronze.csv"):
        assert not matches(key), key


def test_the_sweep_starts_an_execution_with_no_file(template) -> None:
    sweep = props(template, "Sweep")
    assert sweep["Target"]["Arn"] == {"Ref": "StateMachine"}
    assert json.loads(sweep["Target"]["Input"]) == {p: "" for p in RUN_PARAMETERS}
    assert template["Parameters"]["SweepSchedule"]["Default"] == "rate(1 hour)"
    # That input is what the definition's first Choice sends to the sweep's check.
    (choice,) = asl.to_asl()["States"][asl.FILE_OR_SWEEP]["Choices"]
    assert choice["Variable"] == f"$.{SWEEP.file_parameter}"
    assert json.loads(sweep["Target"]["Input"])[SWEEP.file_parameter] == choice["StringEquals"]


def test_failed_executions_notify_the_failure_topic(template) -> None:
    rule = props(template, "ExecutionFailedRule")
    detail = rule["EventPattern"]["detail"]
    assert set(detail["status"]) == {"FAILED", "TIMED_OUT", "ABORTED"}
    assert detail["stateMachineArn"] == [{"Ref": "StateMachine"}]
    topic = target(rule["Targets"][0]["Arn"])
    assert template["Resources"][topic]["Type"] == "AWS::SNS::Topic"


# --- the Athena tables ----------------------------------------------------------------------


def test_glue_tables_match_what_the_catalog_code_registers(template) -> None:
    tables = {props(template, k)["TableInput"]["Name"]: props(template, k)["TableInput"]
              for k in of_type(template, "AWS::Glue::Table")}
    default = Settings()
    assert set(tables) == {glue_catalog.table_name(default, s) for s in glue_catalog.TABLES}
    for spec in glue_catalog.TABLES:
        table = tables[glue_catalog.table_name(default, spec)]
        sd = table["StorageDescriptor"]
        assert sd["Columns"] == glue_catalog.glue_columns(spec), spec.layer
        assert table["PartitionKeys"] == [{"Name": k, "Type": t}
                                          for k, t in spec.partition_keys], spec.layer
        assert sd["Location"] == {"Fn::Sub": "s3://${LakeBucket}/" + spec.layer + "/"}
        assert sd["InputFormat"] == glue_catalog.PARQUET_INPUT
        assert sd["OutputFormat"] == glue_catalog.PARQUET_OUTPUT
        assert sd["SerdeInfo"]["SerializationLibrary"] == glue_catalog.PARQUET_SERDE
        assert table["TableType"] == "EXTERNAL_TABLE"


# --- no secret anywhere ---------------------------------------------------------------------


def test_no_secret_value_in_the_template_or_the_definition(template) -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "SecretString" not in text
    assert not of_type(template, "AWS::SecretsManager::Secret")
    for name, param in template["Parameters"].items():
        if re.search(r"password|passwd|secret|token|credential", name, re.IGNORECASE):
            assert "Default" not in param or param["Default"] == "", name
            assert "secret:" in param.get("AllowedPattern", "") or name.endswith("KeyArn"), name
    for f in of_type(template, "AWS::Lambda::Function").values():
        env = f["Properties"]["Environment"]["Variables"]
        assert not {"PURCHASES_DATABASE_PASSWORD", "PURCHASES_DATABASE_URL"} & set(env)
    for job in of_type(template, "AWS::Glue::Job").values():
        assert "--database_url" not in job["Properties"]["DefaultArguments"]
    definition = rendered_definition()
    for word in ("password", "SecretString", "secretsmanager", "database_url", "secret_arn"):
        assert word.lower() not in definition.lower(), word
    # No account-specific ARN either: the substitutions name the resources at deploy time.
    assert not re.search(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{12}:", definition)


# --- IAM ------------------------------------------------------------------------------------


def test_every_iam_statement_names_its_resources(template) -> None:
    seen = 0
    for role, st in statements(template):
        seen += 1
        actions, resources = as_list(st["Action"]), as_list(st.get("Resource"))
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        assert resources and None not in resources, (role, st.get("Sid"))
        for action in actions:
            assert action != "*" and not action.endswith(":*"), (role, action)
        if "*" in resources:
            assert set(actions) <= STAR_ONLY, (role, st.get("Sid"), actions)
            assert not [a for a in actions if a.startswith(DATA_PREFIXES)], (role, actions)
    assert seen > 20


def test_one_role_per_function_job_state_machine_and_schedule(template) -> None:
    users = [*(props(template, k)["Role"] for k in of_type(template, "AWS::Lambda::Function")),
             *(props(template, k)["Role"] for k in of_type(template, "AWS::Glue::Job")),
             props(template, "StateMachine")["RoleArn"], props(template, "Sweep")["Target"]
             ["RoleArn"]]
    roles = [target(r) for r in users]
    assert len(roles) == len(set(roles)) == len(of_type(template, "AWS::IAM::Role"))


def test_only_the_database_roles_read_the_secret(template) -> None:
    readers = {role for role, st in statements(template)
               if "secretsmanager:GetSecretValue" in as_list(st["Action"])}
    assert readers == {"UpsertRole", "GoldToStagingRole", "PendingRole"}
    for role, st in statements(template):
        if "secretsmanager:GetSecretValue" in as_list(st["Action"]):
            assert as_list(st["Resource"]) == [{"Ref": "DatabaseSecretArn"}], role


# --- the lake bucket ------------------------------------------------------------------------


def test_lake_bucket_is_versioned_encrypted_private_and_tls_only(template) -> None:
    bucket = template["Resources"]["LakeBucket"]
    p = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert p["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert target(rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]) == "LakeKey"
    assert props(template, "LakeKey")["EnableKeyRotation"] is True
    assert p["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True,
        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert p["NotificationConfiguration"] == {"EventBridgeConfiguration":
                                              {"EventBridgeEnabled": True}}
    policy = props(template, "LakeBucketPolicy")
    assert policy["Bucket"] == {"Ref": "LakeBucket"}
    denies = [st for st in policy["PolicyDocument"]["Statement"] if st["Effect"] == "Deny"
              and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert denies, "no statement denies requests without TLS"
    (deny,) = denies
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Resource"] == [{"Fn::GetAtt": ["LakeBucket", "Arn"]},
                                {"Fn::Sub": "${LakeBucket.Arn}/*"}]


# --- parameters -----------------------------------------------------------------------------


def test_parameters_accept_what_the_build_and_the_readme_pass(template) -> None:
    from importlib.metadata import version

    params = template["Parameters"]

    def accepts(name: str, value: str) -> bool:
        return re.fullmatch(params[name]["AllowedPattern"], value) is not None

    wheel = f"purchases-{version('purchases')}-py3-none-any.whl"
    assert Path(wheel).match(package.WHEEL_GLOB) and accepts("WheelFile", wheel)
    assert not accepts("WheelFile", "../evil.whl")
    assert accepts("ArtifactsPrefix", "purchases/0123456789abcdef")
    assert not accepts("ArtifactsPrefix", "/purchases/") and not accepts("ArtifactsPrefix", "")
    assert accepts("DatabaseSecretArn",
                   "arn:aws:secretsmanager:ap-southeast-2:123456789012:secret:purchases-db-AbCdEf")
    assert not accepts("DatabaseSecretArn", "postgres://user:pw@host/db")
    assert accepts("DatabaseSecretKmsKeyArn", "") and accepts("AlertEmail", "")
    assert accepts("GlueDatabaseName", params["GlueDatabaseName"]["Default"])
    Settings(glue_database=params["GlueDatabaseName"]["Default"])  # the product accepts it too
