"""Human review: tasks with guidelines and overlap, queues filled by active learning, labels, agreement."""
