"""A simulated Kubernetes + Istio cluster for trying and testing bluegreen.

It serves the Kubernetes API over HTTP, runs pods as local processes (a kubelet)
and routes traffic as Istio's ingress gateway would. The product never imports
it: it reaches the sandbox through its API and ingress URLs, as it would a real
cluster.
"""
