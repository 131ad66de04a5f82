// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IInstitutionRegistry
/// @notice Which signing addresses belong to registered health institutions, of which kind,
/// and since when. Regulators (REGISTRAR_ROLE) register, suspend and reinstate institutions;
/// anybody can ask whether an address was an active institution of a kind at a given time.
interface IInstitutionRegistry {
    /// @notice What an institution is. `None` marks an unregistered address.
    enum Kind {
        None,
        Hospital,
        Pharmacy,
        Insurer
    }

    /// @notice One change of an institution's status: active (registered or reinstated) or
    /// suspended, from block time `since` on.
    struct StatusChange {
        uint64 since;
        bool active;
    }

    /// @notice An institution as registered.
    struct Institution {
        Kind kind;
        bool active;
        uint64 registeredAt;
        string name;
    }

    /// @notice The zero address cannot be registered.
    error ZeroAddress();
    /// @notice `Kind.None` is not a kind an institution can have.
    error InvalidKind();
    /// @notice Institution names must be 1..64 bytes long.
    error InvalidName(uint256 length);
    /// @notice `institution` is already registered (kinds are permanent; suspend instead).
    error InstitutionAlreadyRegistered(address institution);
    /// @notice `institution` has never been registered.
    error InstitutionNotRegistered(address institution);
    /// @notice `institution` is suspended already.
    error InstitutionAlreadySuspended(address institution);
    /// @notice `institution` is not suspended, so it cannot be reinstated.
    error InstitutionNotSuspended(address institution);

    /// @notice Emitted when `institution` is registered with `kind` and `name`.
    event InstitutionRegistered(address indexed institution, Kind kind, string name);
    /// @notice Emitted when `institution` is suspended.
    event InstitutionSuspended(address indexed institution);
    /// @notice Emitted when a suspended `institution` is reinstated.
    event InstitutionReinstated(address indexed institution);

    /// @notice Registers `institution`'s signing address as an active institution of `kind`.
    /// @dev Only REGISTRAR_ROLE. Reverts with {ZeroAddress}, {InvalidKind}, {InvalidName} or
    /// {InstitutionAlreadyRegistered}.
    function register(address institution, Kind kind, string calldata name) external;

    /// @notice Suspends `institution`: from now on it is not active.
    /// @dev Only REGISTRAR_ROLE. Reverts with {InstitutionNotRegistered} or
    /// {InstitutionAlreadySuspended}.
    function suspend(address institution) external;

    /// @notice Reinstates a suspended `institution`.
    /// @dev Only REGISTRAR_ROLE. Reverts with {InstitutionNotRegistered} or
    /// {InstitutionNotSuspended}.
    function reinstate(address institution) external;

    /// @notice The registration of `institution` (kind `None` when unregistered).
    function institutionOf(address institution) external view returns (Institution memory);

    /// @notice Whether `institution` is registered and active now, of any kind.
    function isActive(address institution) external view returns (bool);

    /// @notice Whether `institution` was registered with `kind` and active at block time `time`.
    /// @dev A change made at time T applies from T on (inclusive).
    function wasActiveAt(address institution, Kind kind, uint64 time) external view returns (bool);

    /// @notice Every status change of `institution`, oldest first.
    function historyOf(address institution) external view returns (StatusChange[] memory);
}
