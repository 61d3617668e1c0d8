"""The local control plane harness: etcd, kube-apiserver, kube-controller-manager, pod runner."""
