"""Where events go to AEP: the IMS and Batch Ingestion client, its resource, the batches asset."""
