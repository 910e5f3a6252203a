"""Cluster conversations with stable ids, label the clusters, and rank them by failure.

    from curation.cluster import cluster, rank_clusters
    cluster(store)                        # k chosen from the data; ids survive later runs
    rank_clusters(store, top=10)          # the rows of `curate clusters --json`
    cluster(store, labeller=LLMLabeller("http://localhost:8000/v1", "my-model", store=store))  # optional LLM labels
"""
from curation.cluster.labels import CTfidfLabeller
from curation.cluster.llm_labels import LLMLabeller, make_labeller
from curation.cluster.model import AutoKMeans, SampledHDBSCAN, choose_k
from curation.cluster.rank import MIN_USERS, rank_clusters, show_cluster, wilson
from curation.cluster.run import ClusterError, cluster

__all__ = ["AutoKMeans", "CTfidfLabeller", "ClusterError", "LLMLabeller", "MIN_USERS", "SampledHDBSCAN", "choose_k",
           "cluster", "make_labeller", "rank_clusters", "show_cluster", "wilson"]
