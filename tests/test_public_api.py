import tuneloop


def test_public_surface_is_exactly_client_create_app_and_settings() -> None:
    assert sorted(tuneloop.__all__) == ["Client", "Settings", "create_app"]
