{{/* Chart name, nameOverride wins. */}}
{{- define "prfence.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-derived base name (kubernetes-csi / helm create convention): fullnameOverride;
else the release name when it contains the chart name (release "prfence" -> "prfence");
else "<release>-<name>". Every object is named from it, so two releases do not collide
on cluster-scoped names (ClusterRoles, ClusterRoleBindings).
*/}}
{{- define "prfence.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prfence.agent.fullname" -}}
{{- printf "%s-agent" (include "prfence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "prfence.controller.fullname" -}}
{{- printf "%s-controller" (include "prfence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prfence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels of every object. */}}
{{- define "prfence.labels" -}}
app.kubernetes.io/name: {{ include "prfence.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "prfence.metaLabels" . }}
{{- end -}}
{{- define "prfence.metaLabels" -}}
helm.sh/chart: {{ include "prfence.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prfence
{{- end -}}

{{/*
Selectors: immutable on a DaemonSet and a Deployment. These are the labels of the chart
before names were derived from the release (name: prfence / prfence-controller, instance:
the release); only nameOverride changes them.
*/}}
{{- define "prfence.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prfence.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "prfence.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prfence.name" . }}-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "prfence.agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prfence.agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
{{- define "prfence.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "prfence.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repo@digest when image.digest is set, else repo:tag (default: appVersion). */}}
{{- define "prfence.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The port of an httpEndpoint value (":9808", "0.0.0.0:9808", "[::]:9808"). */}}
{{- define "prfence.port" -}}
{{- . | splitList ":" | last | int -}}
{{- end -}}
