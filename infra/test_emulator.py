"""Unit tests of infra/emulator.py's pure parts (the latency model):
    .venv/bin/python -m unittest infra/test_emulator.py
"""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from emulator import parse_latency, service_of  # noqa: E402


class ParseLatency(unittest.TestCase):
    def test_milliseconds_per_service_become_seconds(self):
        self.assertEqual(
            parse_latency("dynamodb=4,sqs=8, KMS=6.5"),
            {"dynamodb": 0.004, "sqs": 0.008, "kms": 0.0065},
        )

    def test_empty_means_none(self):
        self.assertEqual(parse_latency(""), {})

    def test_unknown_service_or_shape_is_refused_by_name(self):
        for bad in ("s3=4", "dynamodb", "dynamodb=-1", "sqs=fast"):
            with self.assertRaises(ValueError, msg=bad):
                parse_latency(bad)


def scoped(service):
    return f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"


class ServiceOf(unittest.TestCase):
    def test_json_protocol_targets(self):
        for target, service in (
            ("DynamoDB_20120810.TransactWriteItems", "dynamodb"),
            ("DynamoDBStreams_20120810.GetRecords", "dynamodbstreams"),
            ("AmazonSQS.SendMessage", "sqs"),
            ("TrentService.Decrypt", "kms"),
            ("AWSEvents.PutEvents", None),
        ):
            self.assertEqual(service_of({"HTTP_X_AMZ_TARGET": target}), service, target)

    def test_credential_scope_without_target(self):
        self.assertEqual(service_of({"HTTP_AUTHORIZATION": scoped("sqs")}), "sqs")
        self.assertIsNone(service_of({"HTTP_AUTHORIZATION": scoped("s3")}))

    def test_sqs_query_protocol_action(self):
        query = "Action=SendMessage&QueueUrl=http%3A%2F%2Fq&MessageBody=x"
        self.assertEqual(service_of({"QUERY_STRING": query}), "sqs")
        self.assertIsNone(service_of({"QUERY_STRING": "Action=GetCallerIdentity"}))
        self.assertIsNone(service_of({}))


if __name__ == "__main__":
    unittest.main()
