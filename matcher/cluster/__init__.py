"""Running ``icd index`` and ``icd match`` on a Ray cluster (the optional ``[ray]`` extra): Ray Data actors describe
references and queries, CPU actors verify queries against the index opened read-only, and the driver alone writes
the index and the output. Ray is imported only when a job asks for it."""
