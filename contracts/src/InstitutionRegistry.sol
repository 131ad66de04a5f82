// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IInstitutionRegistry} from "./interfaces/IInstitutionRegistry.sol";

/// @title InstitutionRegistry
/// @notice Registry of health institutions' signing addresses, with the time of every change
/// so that verifiers can ask "was this address an active pharmacy when it signed?".
/// @dev Holds no personal data: only institution addresses, kinds and public names.
contract InstitutionRegistry is IInstitutionRegistry, AccessControl {
    /// @notice Role of the regulators who register, suspend and reinstate institutions.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    uint256 private constant _MAX_NAME_LENGTH = 64;

    mapping(address institution => Institution) private _institutions;
    mapping(address institution => StatusChange[]) private _history;

    /// @param admin receives DEFAULT_ADMIN_ROLE (it grants and revokes REGISTRAR_ROLE).
    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IInstitutionRegistry
    function register(
        address institution,
        Kind kind,
        string calldata name
    ) external onlyRole(REGISTRAR_ROLE) {
        if (institution == address(0)) revert ZeroAddress();
        if (kind == Kind.None) revert InvalidKind();
        uint256 length = bytes(name).length;
        if (length == 0 || length > _MAX_NAME_LENGTH) revert InvalidName(length);
        if (_institutions[institution].kind != Kind.None) {
            revert InstitutionAlreadyRegistered(institution);
        }
        uint64 now_ = uint64(block.timestamp);
        _institutions[institution] = Institution({
            kind: kind,
            active: true,
            registeredAt: now_,
            name: name
        });
        _history[institution].push(StatusChange({since: now_, active: true}));
        emit InstitutionRegistered(institution, kind, name);
    }

    /// @inheritdoc IInstitutionRegistry
    function suspend(address institution) external onlyRole(REGISTRAR_ROLE) {
        Institution storage entry = _registered(institution);
        if (!entry.active) revert InstitutionAlreadySuspended(institution);
        entry.active = false;
        _history[institution].push(StatusChange({since: uint64(block.timestamp), active: false}));
        emit InstitutionSuspended(institution);
    }

    /// @inheritdoc IInstitutionRegistry
    function reinstate(address institution) external onlyRole(REGISTRAR_ROLE) {
        Institution storage entry = _registered(institution);
        if (entry.active) revert InstitutionNotSuspended(institution);
        entry.active = true;
        _history[institution].push(StatusChange({since: uint64(block.timestamp), active: true}));
        emit InstitutionReinstated(institution);
    }

    /// @inheritdoc IInstitutionRegistry
    function institutionOf(address institution) external view returns (Institution memory) {
        return _institutions[institution];
    }

    /// @inheritdoc IInstitutionRegistry
    function isActive(address institution) external view returns (bool) {
        Institution storage entry = _institutions[institution];
        return entry.kind != Kind.None && entry.active;
    }

    /// @inheritdoc IInstitutionRegistry
    function wasActiveAt(address institution, Kind kind, uint64 time) external view returns (bool) {
        if (kind == Kind.None || _institutions[institution].kind != kind) return false;
        StatusChange[] storage history = _history[institution];
        // Binary search for the last change with since <= time (history is sorted by time).
        uint256 low = 0;
        uint256 high = history.length;
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (history[mid].since <= time) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        return low != 0 && history[low - 1].active;
    }

    /// @inheritdoc IInstitutionRegistry
    function historyOf(address institution) external view returns (StatusChange[] memory) {
        return _history[institution];
    }

    function _registered(address institution) private view returns (Institution storage entry) {
        entry = _institutions[institution];
        if (entry.kind == Kind.None) revert InstitutionNotRegistered(institution);
    }
}
