// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title AnchorRegistry
/// @notice Anchors the roots of dsgw's append-only call logs, one RFC 9162 Merkle tree per log
///         stream (stream id = keccak256 of the stream name, e.g. keccak256("calls")).
///
///         The registry is itself a witness: every anchor after the first one of a stream must
///         carry an RFC 9162 section 2.1.4.2 consistency proof from the stream's previous
///         (size, root) to the new one, and the anchor reverts unless the proof verifies. A log
///         operator that rewrote history therefore cannot anchor again on this chain: the
///         anchored sequence of roots of a stream is append-only by construction.
///
///         Hashes are SHA-256 (the 0x02 precompile); a node hash is
///         SHA-256(0x01 || left || right) as in RFC 9162 section 2.1.1. Leaf hashes never enter
///         the contract: proofs consist of subtree hashes only.
///
///         A log hashed with a function the EVM cannot compute (SM3, GB/T 32905) is anchored
///         with anchorWithoutProof: the registry then keeps its roots append-only by size and
///         time-stamps them, and consistency between them must be checked off chain. A
///         stream's first anchor fixes which of the two it is, for good, and every Anchored
///         event says so: an operator cannot move a checked stream to unchecked anchoring.
///
///         Only accounts authorized by the owner may anchor. Ownership moves in two steps
///         (transferOwnership, then acceptOwnership by the new owner). The contract has no
///         upgrade mechanism, no selfdestruct and no delegatecall; its only external call is
///         the SHA-256 precompile.
contract AnchorRegistry {
    /// @dev The latest anchor of one stream: two storage slots (size, block number and the
    ///      withoutProof flag share the first).
    struct Head {
        uint64 size;
        uint64 blockNumber;
        bool withoutProof;
        bytes32 root;
    }

    /// @notice The account that authorizes and revokes anchoring accounts.
    address public owner;

    /// @notice The account that may accept ownership, or the zero address if no transfer is
    ///         pending.
    address public pendingOwner;

    /// @notice Whether an account may anchor.
    mapping(address account => bool) public authorized;

    mapping(bytes32 stream => Head) private _heads;

    /// @notice A stream's tree was anchored at `size` leaves with root `root`; `previousSize`
    ///         and `previousRoot` are the anchor it extends (0 and 0x00..00 for the first).
    ///         `proofChecked` is false for a stream anchored with anchorWithoutProof.
    event Anchored(
        bytes32 indexed stream,
        uint64 size,
        bytes32 root,
        bytes32 previousRoot,
        uint64 previousSize,
        bool proofChecked,
        address indexed by
    );
    event Authorized(address indexed account);
    event Revoked(address indexed account);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The caller is not the owner.
    error NotOwner(address caller);
    /// @notice The caller is not the pending owner.
    error NotPendingOwner(address caller);
    /// @notice The caller is not an authorized anchoring account.
    error NotAuthorized(address caller);
    /// @notice The zero address cannot be authorized.
    error ZeroAddress();
    /// @notice An anchor must grow the tree: `size` must exceed the stream's `latestSize`.
    error SizeNotIncreasing(uint64 size, uint64 latestSize);
    /// @notice The first anchor of a stream has nothing to be consistent with: its proof must
    ///         be empty.
    error UnexpectedProof();
    /// @notice The consistency proof does not lead from the stream's latest anchor to the new
    ///         (size, root).
    error InvalidConsistencyProof(uint64 previousSize, bytes32 previousRoot);
    /// @notice The stream was first anchored the other way (with or without consistency
    ///         proofs, as `proofChecked` says) and must stay so.
    error StreamModeMismatch(bool proofChecked);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice The deployer becomes the owner; no account is authorized to anchor yet.
    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Anchors `root` as the root of the tree of the first `size` entries of `stream`.
    /// @param consistencyProof Empty for the first anchor of a stream; otherwise the RFC 9162
    ///        consistency proof between the stream's latest anchor and (`size`, `root`).
    function anchor(bytes32 stream, uint64 size, bytes32 root, bytes32[] calldata consistencyProof)
        external
    {
        Head storage head = _advance(stream, size, false);
        uint64 previousSize = head.size;
        bytes32 previousRoot = head.root;
        if (previousSize == 0) {
            if (consistencyProof.length != 0) revert UnexpectedProof();
        } else if (
            !_verifyConsistency(previousSize, size, previousRoot, root, consistencyProof)
        ) {
            revert InvalidConsistencyProof(previousSize, previousRoot);
        }
        _record(head, stream, size, root, true);
    }

    /// @notice Anchors `root` for a stream whose tree hash the EVM cannot compute (SM3): the
    ///         size must grow, but consistency with the previous root is not checked here.
    function anchorWithoutProof(bytes32 stream, uint64 size, bytes32 root) external {
        Head storage head = _advance(stream, size, true);
        _record(head, stream, size, root, false);
    }

    /// @notice The latest anchor of `stream`: its tree size, root, the block it was anchored
    ///         in (all zero if the stream was never anchored) and whether its anchors carry
    ///         checked consistency proofs (true for a stream never anchored).
    function latest(bytes32 stream)
        external
        view
        returns (uint64 size, bytes32 root, uint64 blockNumber, bool proofChecked)
    {
        Head storage head = _heads[stream];
        return (head.size, head.root, head.blockNumber, !head.withoutProof);
    }

    /// @notice Allows `account` to anchor.
    function authorize(address account) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        authorized[account] = true;
        emit Authorized(account);
    }

    /// @notice Withdraws `account`'s permission to anchor.
    function revoke(address account) external onlyOwner {
        authorized[account] = false;
        emit Revoked(account);
    }

    /// @notice Offers ownership to `newOwner`, who must call acceptOwnership; the zero address
    ///         cancels a pending offer.
    function transferOwnership(address newOwner) external onlyOwner {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(msg.sender, newOwner);
    }

    /// @notice Completes a transfer started by transferOwnership.
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        address previousOwner = owner;
        owner = msg.sender;
        pendingOwner = address(0);
        emit OwnershipTransferred(previousOwner, msg.sender);
    }

    /// @dev The checks common to both ways of anchoring: the caller may anchor, the stream
    ///      keeps the mode of its first anchor, and the tree grows.
    function _advance(bytes32 stream, uint64 size, bool withoutProof)
        private
        view
        returns (Head storage head)
    {
        if (!authorized[msg.sender]) revert NotAuthorized(msg.sender);
        head = _heads[stream];
        if (head.size != 0 && head.withoutProof != withoutProof) {
            revert StreamModeMismatch(!head.withoutProof);
        }
        if (size <= head.size) revert SizeNotIncreasing(size, head.size);
    }

    /// @dev Moves the stream's head to (`size`, `root`) and emits Anchored.
    function _record(Head storage head, bytes32 stream, uint64 size, bytes32 root, bool checked)
        private
    {
        uint64 previousSize = head.size;
        bytes32 previousRoot = head.root;
        head.size = size;
        head.blockNumber = uint64(block.number);
        head.withoutProof = !checked;
        head.root = root;
        emit Anchored(stream, size, root, previousRoot, previousSize, checked, msg.sender);
    }

    /// @dev RFC 9162 section 2.1.4.2, for 0 < first < second; names follow the RFC.
    function _verifyConsistency(
        uint256 first,
        uint256 second,
        bytes32 firstHash,
        bytes32 secondHash,
        bytes32[] calldata consistencyPath
    ) private view returns (bool) {
        uint256 length = consistencyPath.length;
        // Step 1: an empty path proves nothing between different sizes.
        if (length == 0) return false;
        // Step 2: if first is an exact power of 2, first_hash is the path's implicit first
        // element. Steps 4 and 5 below start from it instead of copying the path.
        bytes32 fr;
        uint256 i;
        if ((first & (first - 1)) == 0) {
            fr = firstHash;
        } else {
            fr = consistencyPath[0];
            i = 1;
        }
        bytes32 sr = fr;
        unchecked {
            // Step 3.
            uint256 fn = first - 1;
            uint256 sn = second - 1;
            while ((fn & 1) == 1) {
                fn >>= 1;
                sn >>= 1;
            }
            // Step 5.
            for (; i < length; ++i) {
                if (sn == 0) return false;
                bytes32 c = consistencyPath[i];
                if ((fn & 1) == 1 || fn == sn) {
                    fr = _hashChildren(c, fr);
                    sr = _hashChildren(c, sr);
                    while ((fn & 1) == 0 && fn != 0) {
                        fn >>= 1;
                        sn >>= 1;
                    }
                } else {
                    sr = _hashChildren(sr, c);
                }
                fn >>= 1;
                sn >>= 1;
            }
            // Step 6.
            return fr == firstHash && sr == secondHash && sn == 0;
        }
    }

    /// @dev SHA-256(0x01 || left || right), hashed in scratch memory past the free memory
    ///      pointer so that a long proof does not grow memory.
    function _hashChildren(bytes32 left, bytes32 right) private view returns (bytes32 node) {
        bool ok;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, 0x01)
            mstore(add(ptr, 0x01), left)
            mstore(add(ptr, 0x21), right)
            ok := staticcall(gas(), 0x02, ptr, 0x41, ptr, 0x20)
            node := mload(ptr)
        }
        // The precompile fails only when it runs out of gas.
        require(ok);
    }
}
