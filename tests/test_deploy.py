"""The AWS deployment: the template passes cfn-lint and keeps to least privilege, and
the function package built by `make lambda-package` runs the handler on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "aws" / "template.yaml"


def template() -> dict:
    from cfnlint.decode import decode

    parsed, problems = decode(str(TEMPLATE))
    assert not problems
    return parsed


def resources(kind: str) -> dict[str, dict]:
    return {name: r.get("Properties", {}) for name, r in template()["Resources"].items() if r["Type"] == kind}


def test_the_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_function_runs_the_handler_with_its_settings_from_the_environment():
    [function] = resources("AWS::Lambda::Function").values()
    module, _, name = function["Handler"].rpartition(".")
    import importlib

    assert callable(getattr(importlib.import_module(module), name))
    env = function["Environment"]["Variables"]
    assert {"CAFE_ETL_WAREHOUSE", "CAFE_ETL_SECRET_ID"} <= set(env)
    assert not any("PASSWORD" in key or "CUSTOMER_KEY" in key for key in env)  # secrets stay in the store


def test_uploads_reach_the_function_through_a_queue_with_a_dead_letter_queue():
    bucket = resources("AWS::S3::Bucket")["LandingBucket"]
    [notification] = bucket["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    queue = resources("AWS::SQS::Queue")["LandingQueue"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    [trigger] = resources("AWS::Lambda::EventSourceMapping").values()
    assert trigger["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    [function] = resources("AWS::Lambda::Function").values()
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert bucket["PublicAccessBlockConfiguration"] == {k: True for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")}


def test_alarms_watch_errors_the_dead_letter_queue_and_a_stalled_queue():
    alarms = resources("AWS::CloudWatch::Alarm").values()
    watched = {(a["Namespace"], a["MetricName"], json.dumps(a["Dimensions"][0]["Value"])) for a in alarms}
    assert watched == {
        ("AWS/Lambda", "Errors", json.dumps({"Ref": "LoaderFunction"})),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", json.dumps({"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]})),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", json.dumps({"Fn::GetAtt": ["LandingQueue", "QueueName"]})),
    }


def test_the_function_role_grants_only_what_loading_needs():
    [role] = resources("AWS::IAM::Role").values()
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    actions = sorted(a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert actions == ["logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:ListBucket",
                       "secretsmanager:GetSecretValue", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
                       "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    assert all(s["Effect"] == "Allow" and "*" not in json.dumps(s["Resource"]).replace("/*", "") for s in statements)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """`deploy/aws/package.py` for this interpreter's version, unpacked."""
    out = tmp_path_factory.mktemp("lambda") / "lambda.zip"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "aws" / "package.py"), "--out", str(out),
                             "--python-version", version], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        message = f"the package could not be built (is the package registry reachable?): {result.stderr[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert "wrote" in result.stdout
    folder = out.parent / "unpacked"
    with zipfile.ZipFile(out) as archive:
        assert not [n for n in archive.namelist() if "__pycache__" in n]
        archive.extractall(folder)
    return folder


def test_the_package_alone_loads_an_sqs_batch(package, generated, bucket, tmp_path):
    from tests.test_lambda import notifications_to_queue, reference_report, report

    queue = notifications_to_queue(bucket)
    path = sorted(generated.glob("*.csv"))[0]
    bucket.put("pkg/one.csv", path)
    event = {"Records": queue.lambda_records(expect=2)}
    warehouse = f"duckdb:///{tmp_path / 'function.duckdb'}"
    # -S: no site-packages, so nothing comes from this project's environment.
    code = (f"import sys; sys.path.insert(0, {str(package)!r}); import json; "
            "from cafe_etl.aws_lambda import handler; print(json.dumps(handler(json.load(sys.stdin))))")
    env = {"PATH": os.environ["PATH"], "CAFE_ETL_WAREHOUSE": warehouse, "CAFE_ETL_CUSTOMER_KEY": "ab" * 32,
           "AWS_ENDPOINT_URL_S3": bucket.server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-S", "-c", code], input=json.dumps(event), capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    reply = json.loads(result.stdout)
    assert reply["outcomes"] == {"loaded": 1} and reply["batchItemFailures"] == []
    assert report(warehouse) == reference_report(tmp_path, [path])


PIPELINE = ROOT / "deploy" / "aws" / "pipeline.yaml"
BUILDSPEC = ROOT / "buildspec.yml"


def test_the_pipeline_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(PIPELINE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_codebuild_runs_the_readme_s_test_command_and_builds_the_package():
    import yaml

    spec = yaml.safe_load(BUILDSPEC.read_text())
    assert str(spec["version"]) == "0.2"
    build = spec["phases"]["build"]
    assert build["commands"] == [".ci/run", "make lambda-package"] and build["on-failure"] == "ABORT"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert spec["env"]["variables"]["CI"] == "1"
    junit = spec["env"]["variables"]["PYTEST_ADDOPTS"].removeprefix("--junitxml=")
    report = spec["reports"]["pytest"]
    assert report["file-format"] == "JUNITXML" and f"{report['base-directory']}/{report['files'][0]}" == junit
    unzip = spec["phases"]["post_build"]["commands"][0]
    assert "build/lambda.zip" in unzip and spec["artifacts"]["base-directory"] == unzip.split(" -d ")[1]
    script = ROOT / "deploy" / "aws" / "codebuild-postgres.sh"
    assert any(str(script.relative_to(ROOT)) in c for c in spec["phases"]["install"]["commands"])
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_the_pipeline_tests_then_deploys_the_landing_zone_with_the_built_package():
    from cfnlint.decode import decode

    pipeline, problems = decode(str(PIPELINE))
    assert not problems
    stages = pipeline["Resources"]["Pipeline"]["Properties"]["Stages"]
    assert [s["Name"] for s in stages] == ["Source", "Test", "Deploy"]
    build = pipeline["Resources"]["TestProject"]["Properties"]
    assert build["Source"] == {"Type": "CODEPIPELINE", "BuildSpec": "buildspec.yml"}
    [deploy] = stages[2]["Actions"]
    config = deploy["Configuration"]
    assert config["TemplatePath"] == "SourceOutput::deploy/aws/template.yaml"
    assert config["ActionMode"] == "CREATE_UPDATE"
    overrides = json.loads(config["ParameterOverrides"]["Fn::Sub"].replace("${", "").replace("}\"", "\""))
    assert overrides["CodeKey"] == {"Fn::GetArtifactAtt": ["FunctionPackage", "ObjectKey"]}
    parameters = template()["Parameters"]
    required = {name for name, p in parameters.items() if "Default" not in p}
    assert required <= set(overrides) <= set(parameters)
