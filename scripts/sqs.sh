# Queue calls against the local SQS emulator (moto), sourced by scripts/dev.sh and
# scripts/emulator.sh. Plain curl on the AWS JSON protocol: starting boto3 for each call (one
# per depth poll) took most of `make dev`'s own CPU, which its tests run eight times at once.
#
#   sqs_create_queues ENDPOINT     creates reservation-events-dlq and reservation-events
#                                  (RedrivePolicy to the DLQ, maxReceiveCount 5) and prints
#                                  SQS_QUEUE_URL=... and SQS_DLQ_URL=... lines
#   sqs_depth ENDPOINT QUEUE_URL   prints visible + in-flight messages of one queue
#
# moto checks no signature; the Authorization header only names the region, which picks
# moto's backend (without it the call is taken for S3). AWS_REGION, default ap-northeast-2.

# sqs_call ENDPOINT ACTION JSON: prints the response body; fails with moto's message.
sqs_call() {
    local endpoint="$1" action="$2" body="$3" region="${AWS_REGION:-ap-northeast-2}" out code
    out="$(curl -sS -X POST "$endpoint/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H "X-Amz-Target: AmazonSQS.$action" \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/$region/sqs/aws4_request, SignedHeaders=host, Signature=0" \
        --data-binary "$body" -w '\n%{http_code}')" || {
        echo "sqs $action: no answer from $endpoint" >&2
        return 1
    }
    code="${out##*$'\n'}"
    out="${out%$'\n'*}"
    if [[ "$code" != 200 ]]; then
        echo "sqs $action: HTTP $code: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# json_string FIELD: the first "FIELD": "value" of a flat JSON object on stdin, unescaped
# only as far as queue URLs, ARNs and statuses need.
json_string() {
    sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n 1
}

sqs_create_queues() {
    local endpoint="$1" dlq_url dlq_arn queue_url redrive
    dlq_url="$(sqs_call "$endpoint" CreateQueue '{"QueueName": "reservation-events-dlq"}' | json_string QueueUrl)"
    [[ -n "$dlq_url" ]] || return 1
    dlq_arn="$(sqs_call "$endpoint" GetQueueAttributes \
        "{\"QueueUrl\": \"$dlq_url\", \"AttributeNames\": [\"QueueArn\"]}" | json_string QueueArn)"
    [[ -n "$dlq_arn" ]] || return 1
    redrive="{\\\"deadLetterTargetArn\\\": \\\"$dlq_arn\\\", \\\"maxReceiveCount\\\": \\\"5\\\"}"
    queue_url="$(sqs_call "$endpoint" CreateQueue \
        "{\"QueueName\": \"reservation-events\", \"Attributes\": {\"RedrivePolicy\": \"$redrive\", \"VisibilityTimeout\": \"30\"}}" |
        json_string QueueUrl)"
    [[ -n "$queue_url" ]] || return 1
    echo "SQS_QUEUE_URL=$queue_url"
    echo "SQS_DLQ_URL=$dlq_url"
}

sqs_depth() {
    local attrs visible in_flight
    attrs="$(sqs_call "$1" GetQueueAttributes \
        "{\"QueueUrl\": \"$2\", \"AttributeNames\": [\"ApproximateNumberOfMessages\", \"ApproximateNumberOfMessagesNotVisible\"]}")" ||
        return 1
    visible="$(json_string ApproximateNumberOfMessages <<<"$attrs")"
    in_flight="$(json_string ApproximateNumberOfMessagesNotVisible <<<"$attrs")"
    [[ "$visible" =~ ^[0-9]+$ && "$in_flight" =~ ^[0-9]+$ ]] || {
        echo "sqs GetQueueAttributes: no message counts in $attrs" >&2
        return 1
    }
    echo $((visible + in_flight))
}
