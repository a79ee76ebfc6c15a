#!/usr/bin/env python3
"""Queue helper for local runs against the SQS emulator (moto), used by scripts/dev.sh.

    dev_queues.py create --endpoint URL   creates the DLQ and the source queue (RedrivePolicy
                                          to the DLQ) and prints SQS_QUEUE_URL=... and
                                          SQS_DLQ_URL=... lines
    dev_queues.py depth --endpoint URL --queue-url URL
                                          prints visible + in-flight messages of one queue

Runs with the project venv's Python (.venv/bin/python), where boto3 comes with moto.
Credentials default to the dummy test/test and the region to ap-northeast-2.
"""

import argparse
import json
import os
import sys

try:
    import boto3
except ImportError:
    sys.exit("dev_queues.py: boto3 is missing; run scripts/install-moto.sh and use .venv/bin/python")


def client(endpoint: str, region: str):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )


def create(args) -> None:
    sqs = client(args.endpoint, args.region)
    dlq_url = sqs.create_queue(QueueName=args.dlq)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(args.max_receive_count)}
    queue_url = sqs.create_queue(
        QueueName=args.queue,
        Attributes={
            "RedrivePolicy": json.dumps(redrive),
            "VisibilityTimeout": str(args.visibility_timeout),
        },
    )["QueueUrl"]
    print(f"SQS_QUEUE_URL={queue_url}")
    print(f"SQS_DLQ_URL={dlq_url}")


def depth(args) -> None:
    sqs = client(args.endpoint, args.region)
    attrs = sqs.get_queue_attributes(
        QueueUrl=args.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    print(
        int(attrs.get("ApproximateNumberOfMessages", 0))
        + int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "ap-northeast-2"))
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("create", help="create the DLQ and the source queue")
    c.add_argument("--endpoint", required=True, help="the emulator, e.g. http://127.0.0.1:4566")
    c.add_argument("--queue", default="reservation-events")
    c.add_argument("--dlq", default="reservation-events-dlq")
    c.add_argument("--max-receive-count", type=int, default=5)
    c.add_argument("--visibility-timeout", type=int, default=30)
    c.set_defaults(func=create)

    d = sub.add_parser("depth", help="print visible + in-flight messages")
    d.add_argument("--endpoint", required=True)
    d.add_argument("--queue-url", required=True)
    d.set_defaults(func=depth)

    args = p.parse_args()
    try:
        args.func(args)
    except Exception as e:  # one line, not a traceback: the caller prints it
        sys.exit(f"dev_queues.py {args.command}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
