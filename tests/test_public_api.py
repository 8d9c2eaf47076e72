import tuneloop


def test_public_surface_is_exactly_the_clients_create_app_and_settings() -> None:
    assert sorted(tuneloop.__all__) == ["AsyncClient", "Client", "Settings", "create_app"]
    from tuneloop import AsyncClient, Client  # as the README pairs them

    assert AsyncClient.__module__ == "tuneloop.async_client" and Client.__module__ == "tuneloop.client"
