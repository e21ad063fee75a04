"""The fields and JSON types of every kind the sandbox serves, as the real server knows them.

Owns the type catalogue `sandbox.decoding` checks request bodies against: for the
built-in kinds the Go structs of k8s.io/api (field names as in JSON, Go type names
as `json` error messages print them), for the Istio kinds the structural schemas of
Istio's CRDs (manifests/charts/base/files/crd-all.gen.yaml), which describe `spec`
field by field and preserve unknown fields only under `status`.

Depth is chosen, not complete: every field of the structs the product and its
tests write is listed (metadata, Deployment/ReplicaSet/Pod specs down to
containers, ports, env, probes; Service; ConfigMap; Secret; Namespace; Event; the
Istio routing fields), so an unknown field there is caught; structs nobody here
writes field by field (securityContext, affinity, volume sources, Istio's
trafficPolicy, tls, retries, ...) are `OPAQUE`: they must be objects, their
contents are kept as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scalar:
    """A JSON scalar: `go` as Go names it, `openapi` as a CRD schema does."""

    go: str
    openapi: str
    accepts: tuple[str, ...]  # JSON kinds: string, integer, number, boolean


@dataclass(frozen=True)
class Struct:
    """A JSON object with named fields; `opaque` ones are not looked into."""

    go: str
    fields: Mapping[str, Schema] = field(default_factory=dict)
    opaque: bool = False


@dataclass(frozen=True)
class MapOf:
    value: Schema

    @property
    def go(self) -> str:
        return f"map[string]{self.value.go}"


@dataclass(frozen=True)
class ListOf:
    item: Schema

    @property
    def go(self) -> str:
        return f"[]{self.item.go}"


@dataclass(frozen=True)
class Anything:
    """Any JSON value (RawExtension, x-kubernetes-preserve-unknown-fields)."""

    go: str = "interface {}"


Schema = Scalar | Struct | MapOf | ListOf | Anything

STRING = Scalar("string", "string", ("string",))
INT32 = Scalar("int32", "integer", ("integer",))
INT64 = Scalar("int64", "integer", ("integer",))
BOOL = Scalar("bool", "boolean", ("boolean",))
# IntOrString's UnmarshalJSON takes a string, else decodes the number into its int32.
INTSTR = Scalar("int32", "integer", ("string", "integer"))
QUANTITY = Scalar("resource.Quantity", "string", ("string", "integer", "number"))
TIME = Scalar("v1.Time", "string", ("string",))
BYTES = Scalar("[]uint8", "string", ("string",))
ANY = Anything()
STRINGS = ListOf(STRING)
LABELS = MapOf(STRING)


def opaque(go: str) -> Struct:
    return Struct(go, opaque=True)


def struct(go: str, fields: Mapping[str, Schema]) -> Struct:
    return Struct(go, fields)


# ---- meta/v1 --------------------------------------------------------------------------------

OWNER_REFERENCE = struct("v1.OwnerReference", {
    "apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING,
    "controller": BOOL, "blockOwnerDeletion": BOOL})
MANAGED_FIELDS_ENTRY = struct("v1.ManagedFieldsEntry", {
    "manager": STRING, "operation": STRING, "apiVersion": STRING, "time": TIME,
    "fieldsType": STRING, "fieldsV1": ANY, "subresource": STRING})
OBJECT_META = struct("v1.ObjectMeta", {
    "name": STRING, "generateName": STRING, "namespace": STRING, "selfLink": STRING,
    "uid": STRING, "resourceVersion": STRING, "generation": INT64,
    "creationTimestamp": TIME, "deletionTimestamp": TIME, "deletionGracePeriodSeconds": INT64,
    "labels": LABELS, "annotations": LABELS, "ownerReferences": ListOf(OWNER_REFERENCE),
    "finalizers": STRINGS, "managedFields": ListOf(MANAGED_FIELDS_ENTRY)})
DELETE_OPTIONS = struct("v1.DeleteOptions", {
    "apiVersion": STRING, "kind": STRING, "gracePeriodSeconds": INT64,
    "preconditions": struct("v1.Preconditions", {
        "uid": Scalar("types.UID", "string", ("string",)), "resourceVersion": STRING}),
    "orphanDependents": BOOL,
    "propagationPolicy": Scalar("v1.DeletionPropagation", "string", ("string",)),
    "dryRun": STRINGS})
LABEL_SELECTOR = struct("v1.LabelSelector", {
    "matchLabels": LABELS,
    "matchExpressions": ListOf(struct("v1.LabelSelectorRequirement", {
        "key": STRING, "operator": STRING, "values": STRINGS}))})


def top(go: str, fields: Mapping[str, Schema]) -> Struct:
    """A kind: TypeMeta, ObjectMeta and its own fields."""
    return struct(go, {"apiVersion": STRING, "kind": STRING, "metadata": OBJECT_META, **fields})


# ---- core/v1: pods ----------------------------------------------------------------------------

KEY_REF = {"name": STRING, "key": STRING, "optional": BOOL}
ENV_VAR = struct("v1.EnvVar", {
    "name": STRING, "value": STRING,
    "valueFrom": struct("v1.EnvVarSource", {
        "fieldRef": struct("v1.ObjectFieldSelector", {"apiVersion": STRING, "fieldPath": STRING}),
        "resourceFieldRef": struct("v1.ResourceFieldSelector", {
            "containerName": STRING, "resource": STRING, "divisor": QUANTITY}),
        "configMapKeyRef": struct("v1.ConfigMapKeySelector", KEY_REF),
        "secretKeyRef": struct("v1.SecretKeySelector", KEY_REF)})})
ENV_FROM = struct("v1.EnvFromSource", {
    "prefix": STRING,
    "configMapRef": struct("v1.ConfigMapEnvSource", {"name": STRING, "optional": BOOL}),
    "secretRef": struct("v1.SecretEnvSource", {"name": STRING, "optional": BOOL})})
CONTAINER_PORT = struct("v1.ContainerPort", {
    "name": STRING, "hostPort": INT32, "containerPort": INT32, "protocol": STRING,
    "hostIP": STRING})
HTTP_GET = struct("v1.HTTPGetAction", {
    "path": STRING, "port": INTSTR, "host": STRING, "scheme": STRING,
    "httpHeaders": ListOf(struct("v1.HTTPHeader", {"name": STRING, "value": STRING}))})
PROBE = struct("v1.Probe", {
    "exec": struct("v1.ExecAction", {"command": STRINGS}),
    "httpGet": HTTP_GET,
    "tcpSocket": struct("v1.TCPSocketAction", {"port": INTSTR, "host": STRING}),
    "grpc": struct("v1.GRPCAction", {"port": INT32, "service": STRING}),
    "initialDelaySeconds": INT32, "timeoutSeconds": INT32, "periodSeconds": INT32,
    "successThreshold": INT32, "failureThreshold": INT32,
    "terminationGracePeriodSeconds": INT64})
RESOURCES = struct("v1.ResourceRequirements", {
    "limits": MapOf(QUANTITY), "requests": MapOf(QUANTITY),
    "claims": ListOf(struct("v1.ResourceClaim", {"name": STRING, "request": STRING}))})
VOLUME_MOUNT = struct("v1.VolumeMount", {
    "name": STRING, "readOnly": BOOL, "recursiveReadOnly": STRING, "mountPath": STRING,
    "subPath": STRING, "mountPropagation": STRING, "subPathExpr": STRING})
CONTAINER = struct("v1.Container", {
    "name": STRING, "image": STRING, "command": STRINGS, "args": STRINGS,
    "workingDir": STRING, "ports": ListOf(CONTAINER_PORT), "envFrom": ListOf(ENV_FROM),
    "env": ListOf(ENV_VAR), "resources": RESOURCES,
    "resizePolicy": ListOf(opaque("v1.ContainerResizePolicy")), "restartPolicy": STRING,
    "volumeMounts": ListOf(VOLUME_MOUNT), "volumeDevices": ListOf(opaque("v1.VolumeDevice")),
    "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE,
    "lifecycle": opaque("v1.Lifecycle"), "terminationMessagePath": STRING,
    "terminationMessagePolicy": STRING, "imagePullPolicy": STRING,
    "securityContext": opaque("v1.SecurityContext"), "stdin": BOOL, "stdinOnce": BOOL,
    "tty": BOOL})
_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret",
    "nfs", "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder",
    "cephfs", "flocker", "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume",
    "quobyte", "azureDisk", "photonPersistentDisk", "projected", "portworxVolume", "scaleIO",
    "storageos", "csi", "ephemeral", "image")
VOLUME = struct("v1.Volume", {"name": STRING, **{
    source: opaque(f"v1.{source[0].upper()}{source[1:]}VolumeSource")
    for source in _VOLUME_SOURCES}})
POD_SPEC = struct("v1.PodSpec", {
    "volumes": ListOf(VOLUME), "initContainers": ListOf(CONTAINER),
    "containers": ListOf(CONTAINER), "ephemeralContainers": ListOf(opaque("v1.EphemeralContainer")),
    "restartPolicy": STRING, "terminationGracePeriodSeconds": INT64,
    "activeDeadlineSeconds": INT64, "dnsPolicy": STRING, "nodeSelector": LABELS,
    "serviceAccountName": STRING, "serviceAccount": STRING,
    "automountServiceAccountToken": BOOL, "nodeName": STRING, "hostNetwork": BOOL,
    "hostPID": BOOL, "hostIPC": BOOL, "shareProcessNamespace": BOOL,
    "securityContext": opaque("v1.PodSecurityContext"),
    "imagePullSecrets": ListOf(struct("v1.LocalObjectReference", {"name": STRING})),
    "hostname": STRING, "subdomain": STRING, "affinity": opaque("v1.Affinity"),
    "schedulerName": STRING, "tolerations": ListOf(opaque("v1.Toleration")),
    "hostAliases": ListOf(opaque("v1.HostAlias")), "priorityClassName": STRING,
    "priority": INT32, "dnsConfig": opaque("v1.PodDNSConfig"),
    "readinessGates": ListOf(opaque("v1.PodReadinessGate")), "runtimeClassName": STRING,
    "enableServiceLinks": BOOL, "preemptionPolicy": STRING, "overhead": MapOf(QUANTITY),
    "topologySpreadConstraints": ListOf(opaque("v1.TopologySpreadConstraint")),
    "setHostnameAsFQDN": BOOL, "os": opaque("v1.PodOS"), "hostUsers": BOOL,
    "schedulingGates": ListOf(opaque("v1.PodSchedulingGate")),
    "resourceClaims": ListOf(opaque("v1.PodResourceClaim")), "resources": RESOURCES})
POD_TEMPLATE = struct("v1.PodTemplateSpec", {"metadata": OBJECT_META, "spec": POD_SPEC})
# The kubelet writes pod status; clients rarely do, so it is taken as sent.
POD = top("v1.Pod", {"spec": POD_SPEC, "status": opaque("v1.PodStatus")})

# ---- core/v1: the rest ----------------------------------------------------------------------

SERVICE = top("v1.Service", {
    "spec": struct("v1.ServiceSpec", {
        "ports": ListOf(struct("v1.ServicePort", {
            "name": STRING, "protocol": STRING, "appProtocol": STRING, "port": INT32,
            "targetPort": INTSTR, "nodePort": INT32})),
        "selector": LABELS, "clusterIP": STRING, "clusterIPs": STRINGS, "type": STRING,
        "externalIPs": STRINGS, "sessionAffinity": STRING, "loadBalancerIP": STRING,
        "loadBalancerSourceRanges": STRINGS, "externalName": STRING,
        "externalTrafficPolicy": STRING, "healthCheckNodePort": INT32,
        "publishNotReadyAddresses": BOOL,
        "sessionAffinityConfig": opaque("v1.SessionAffinityConfig"), "ipFamilies": STRINGS,
        "ipFamilyPolicy": STRING, "allocateLoadBalancerNodePorts": BOOL,
        "loadBalancerClass": STRING, "internalTrafficPolicy": STRING,
        "trafficDistribution": STRING}),
    "status": struct("v1.ServiceStatus", {
        "loadBalancer": struct("v1.LoadBalancerStatus", {
            "ingress": ListOf(struct("v1.LoadBalancerIngress", {
                "ip": STRING, "hostname": STRING, "ipMode": STRING,
                "ports": ListOf(opaque("v1.PortStatus"))}))}),
        "conditions": ListOf(opaque("v1.Condition"))})})
CONFIG_MAP = top("v1.ConfigMap", {"data": LABELS, "binaryData": MapOf(BYTES), "immutable": BOOL})
SECRET = top("v1.Secret", {"data": MapOf(BYTES), "stringData": LABELS, "type": STRING,
                           "immutable": BOOL})
NAMESPACE = top("v1.Namespace", {
    "spec": struct("v1.NamespaceSpec", {"finalizers": STRINGS}),
    "status": struct("v1.NamespaceStatus", {
        "phase": STRING, "conditions": ListOf(opaque("v1.NamespaceCondition"))})})
OBJECT_REFERENCE = struct("v1.ObjectReference", {
    "kind": STRING, "namespace": STRING, "name": STRING, "uid": STRING, "apiVersion": STRING,
    "resourceVersion": STRING, "fieldPath": STRING})
EVENT = top("v1.Event", {
    "involvedObject": OBJECT_REFERENCE, "reason": STRING, "message": STRING,
    "source": struct("v1.EventSource", {"component": STRING, "host": STRING}),
    "firstTimestamp": TIME, "lastTimestamp": TIME, "count": INT32, "type": STRING,
    "eventTime": Scalar("v1.MicroTime", "string", ("string",)),
    "series": opaque("v1.EventSeries"), "action": STRING, "related": OBJECT_REFERENCE,
    "reportingComponent": STRING, "reportingInstance": STRING})

# ---- apps/v1 --------------------------------------------------------------------------------

CONDITION_FIELDS: Mapping[str, Schema] = {
    "type": STRING, "status": STRING, "lastTransitionTime": TIME, "reason": STRING,
    "message": STRING}
DEPLOYMENT = top("v1.Deployment", {
    "spec": struct("v1.DeploymentSpec", {
        "replicas": INT32, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
        "strategy": struct("v1.DeploymentStrategy", {
            "type": STRING,
            "rollingUpdate": struct("v1.RollingUpdateDeployment", {
                "maxUnavailable": INTSTR, "maxSurge": INTSTR})}),
        "minReadySeconds": INT32, "revisionHistoryLimit": INT32, "paused": BOOL,
        "progressDeadlineSeconds": INT32}),
    "status": struct("v1.DeploymentStatus", {
        "observedGeneration": INT64, "replicas": INT32, "updatedReplicas": INT32,
        "readyReplicas": INT32, "availableReplicas": INT32, "unavailableReplicas": INT32,
        "terminatingReplicas": INT32, "collisionCount": INT32,
        "conditions": ListOf(struct("v1.DeploymentCondition", {
            **CONDITION_FIELDS, "lastUpdateTime": TIME}))})})
REPLICA_SET = top("v1.ReplicaSet", {
    "spec": struct("v1.ReplicaSetSpec", {
        "replicas": INT32, "minReadySeconds": INT32, "selector": LABEL_SELECTOR,
        "template": POD_TEMPLATE}),
    "status": struct("v1.ReplicaSetStatus", {
        "replicas": INT32, "fullyLabeledReplicas": INT32, "readyReplicas": INT32,
        "availableReplicas": INT32, "terminatingReplicas": INT32, "observedGeneration": INT64,
        "conditions": ListOf(struct("v1.ReplicaSetCondition", CONDITION_FIELDS))})})

# ---- networking.istio.io (CRD structural schemas; Go names unused) ---------------------------

INTEGER = Scalar("int64", "integer", ("integer",))
STRING_MATCH = struct("StringMatch", {"exact": STRING, "prefix": STRING, "regex": STRING})
PORT_SELECTOR = struct("PortSelector", {"number": INTEGER})
HTTP_MATCH = struct("HTTPMatchRequest", {
    "name": STRING, "uri": STRING_MATCH, "scheme": STRING_MATCH, "method": STRING_MATCH,
    "authority": STRING_MATCH, "headers": MapOf(STRING_MATCH), "port": INTEGER,
    "sourceLabels": LABELS, "gateways": STRINGS, "queryParams": MapOf(STRING_MATCH),
    "ignoreUriCase": BOOL, "withoutHeaders": MapOf(STRING_MATCH), "sourceNamespace": STRING,
    "statPrefix": STRING})
DESTINATION = struct("Destination", {"host": STRING, "subset": STRING, "port": PORT_SELECTOR})
HTTP_ROUTE = struct("HTTPRoute", {
    "name": STRING, "match": ListOf(HTTP_MATCH),
    "route": ListOf(struct("HTTPRouteDestination", {
        "destination": DESTINATION, "weight": INTEGER, "headers": opaque("Headers")})),
    "redirect": opaque("HTTPRedirect"), "directResponse": opaque("HTTPDirectResponse"),
    "delegate": opaque("Delegate"), "rewrite": opaque("HTTPRewrite"), "timeout": STRING,
    "retries": opaque("HTTPRetry"), "fault": opaque("HTTPFaultInjection"),
    "mirror": opaque("Destination"), "mirrors": ListOf(opaque("HTTPMirrorPolicy")),
    "mirrorPercent": INTEGER, "mirrorPercentage": opaque("Percent"),
    "corsPolicy": opaque("CorsPolicy"),
    "headers": opaque("Headers")})
ISTIO_STATUS = ANY  # x-kubernetes-preserve-unknown-fields in Istio's CRDs
VIRTUAL_SERVICE = top("VirtualService", {
    "spec": struct("VirtualService", {
        "hosts": STRINGS, "gateways": STRINGS, "http": ListOf(HTTP_ROUTE),
        "tls": ListOf(opaque("TLSRoute")), "tcp": ListOf(opaque("TCPRoute")),
        "exportTo": STRINGS}),
    "status": ISTIO_STATUS})
DESTINATION_RULE = top("DestinationRule", {
    "spec": struct("DestinationRule", {
        "host": STRING, "trafficPolicy": opaque("TrafficPolicy"),
        "subsets": ListOf(struct("Subset", {
            "name": STRING, "labels": LABELS, "trafficPolicy": opaque("TrafficPolicy")})),
        "exportTo": STRINGS, "workloadSelector": opaque("WorkloadSelector")}),
    "status": ISTIO_STATUS})
GATEWAY = top("Gateway", {
    "spec": struct("Gateway", {
        "selector": LABELS,
        "servers": ListOf(struct("Server", {
            "port": struct("Port", {"number": INTEGER, "protocol": STRING, "name": STRING,
                                    "targetPort": INTEGER}),
            "bind": STRING, "hosts": STRINGS, "tls": opaque("ServerTLSSettings"),
            "defaultEndpoint": STRING, "name": STRING}))}),
    "status": ISTIO_STATUS})

KINDS: Mapping[str, Struct] = {
    "Pod": POD, "Service": SERVICE, "ConfigMap": CONFIG_MAP, "Secret": SECRET,
    "Namespace": NAMESPACE, "Event": EVENT, "Deployment": DEPLOYMENT, "ReplicaSet": REPLICA_SET,
    "VirtualService": VIRTUAL_SERVICE, "DestinationRule": DESTINATION_RULE, "Gateway": GATEWAY,
}
