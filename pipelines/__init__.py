"""synthvox.pipelines."""
